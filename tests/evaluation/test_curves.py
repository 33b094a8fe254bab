"""Accuracy-vs-eps and accuracy-vs-steps curves on the naturally trained
Fashion-MNIST CNN, and the PNG plot."""

import keras
import matplotlib.image
import numpy as np
import pytest

from evaluation import curves

PGD = {"name": "pgd", "eps": 0.1, "step_size": 0.01, "steps": 10, "seed": 0}
N = 300


@pytest.fixture(scope="module")
def cnn(fmnist_cnn):
    return keras.saving.load_model(fmnist_cnn)


@pytest.fixture(scope="module")
def data(fmnist_test):
    return fmnist_test[0][:N], fmnist_test[1][:N]


def test_accuracy_vs_eps_falls_to_zero_and_starts_at_clean(cnn, data):
    """Natural CNN: accuracy falls with eps and is ~0 at 0.3 (measured on
    300 images, PGD-10: 0.900, 0.513, 0.147, 0.000); at eps 0 it is the
    clean accuracy exactly."""
    x, y = data
    out = curves.accuracy_vs_eps(cnn, x, y, PGD, [0, 0.05, 0.1, 0.3],
                                 batch_size=150)
    acc = out["acc"]
    print(f"\nacc vs eps {dict(zip(out['eps'], acc))}")
    clean = float(np.mean(np.argmax(cnn.predict(x, verbose=0), 1) == y))
    assert out["clean_acc"] == clean > 0.75
    assert acc[0] == clean
    assert all(b <= a + 0.01 for a, b in zip(acc, acc[1:]))
    assert acc[-1] <= 0.01
    assert acc[2] < 0.5 * clean  # a natural model is not robust at 0.1
    # "config" rule keeps step_size / eps = 0.1 (eps 0: the config's step).
    np.testing.assert_allclose(out["step_size"], [0.01, 0.005, 0.01, 0.03])
    assert out["n"] == N and out["attack"] == PGD
    assert out["attack_success_rate"] == [None] * 4


def test_accuracy_vs_steps_never_rises(cnn, data):
    """Same seed and start: more iterations keep the best iterate of the
    shorter run, so accuracy does not rise (measured on 300 images:
    0.823, 0.397, 0.080 for 1, 5, 20 steps)."""
    x, y = data
    out = curves.accuracy_vs_steps(cnn, x, y, dict(PGD, steps=20),
                                   [1, 5, 20], batch_size=150)
    acc = out["acc"]
    print(f"\nacc vs steps {dict(zip(out['steps'], acc))}")
    assert all(b <= a + 0.01 for a, b in zip(acc, acc[1:]))
    assert acc[0] > acc[-1] + 0.2  # one 0.01 step cannot cross the ball
    assert out["step_size"] == [0.01] * 3


def test_xie2019_step_size_rule(cnn, data):
    x, y = data
    out = curves.accuracy_vs_eps(cnn, x[:20], y[:20], dict(PGD, steps=2),
                                 [0.0, 0.004, 0.1],
                                 step_size_rule="xie2019")
    # max(1/255, eps/steps), Xie et al. 2019, Sec. 5
    np.testing.assert_allclose(out["step_size"], [1 / 255, 1 / 255, 0.05])
    out = curves.accuracy_vs_steps(cnn, x[:20], y[:20], PGD, [1, 50],
                                   step_size_rule="xie2019")
    np.testing.assert_allclose(out["step_size"], [0.1, 1 / 255])


def test_targeted_curve_reports_success_rate(cnn, data):
    x, y = data
    out = curves.accuracy_vs_eps(cnn, x[:50], y[:50],
                                 dict(PGD, targeted=True), [0.0, 0.3])
    rate = out["attack_success_rate"]
    assert rate[0] == 0.0 and rate[1] > 0.8  # random wrong target reached


@pytest.mark.parametrize("config,grid,match", [
    ({"name": "cw_l2", "steps": 10}, [0.1], "minimum-norm"),
    ({"name": "deepfool"}, [0.1], "minimum-norm"),
    ({"eps": 0.1}, [0.1], "name"),
    (PGD, [0.1, 0.05], "strictly increasing"),
    (PGD, [-0.1, 0.1], "strictly increasing"),
    (PGD, [], "strictly increasing"),
])
def test_accuracy_vs_eps_rejects(cnn, data, config, grid, match):
    with pytest.raises(ValueError, match=match):
        curves.accuracy_vs_eps(cnn, *data, config, grid)


def test_bad_arguments_raise(cnn, data):
    x, y = data
    with pytest.raises(ValueError, match="'fgsm' has no 'steps'"):
        curves.accuracy_vs_steps(cnn, x, y, {"name": "fgsm", "eps": 0.1},
                                 [1, 2])
    with pytest.raises(ValueError, match="integers >= 1"):
        curves.accuracy_vs_steps(cnn, x, y, PGD, [0, 2])
    with pytest.raises(ValueError, match="step_size_rule.*'linear'"):
        curves.accuracy_vs_eps(cnn, x, y, PGD, [0.1], step_size_rule="linear")
    with pytest.raises(ValueError, match="same number"):
        curves.accuracy_vs_eps(cnn, x, y[:-1], PGD, [0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        curves.accuracy_vs_eps(cnn, x * 255, y, PGD, [0.1])
    with pytest.raises(ValueError, match="batch_size"):
        curves.accuracy_vs_eps(cnn, x, y, PGD, [0.1], batch_size=0)
    with pytest.raises(KeyError, match="pgdd"):
        curves.accuracy_vs_eps(cnn, x, y, dict(PGD, name="pgdd"), [0.1])


def test_plot_curve_writes_png_and_never_overwrites(tmp_path):
    path = tmp_path / "plots" / "acc_vs_steps.png"
    got = curves.plot_curve(
        [1, 5, 20], [0.56, 0.13, 0.0], path, xlabel="PGD iterations",
        ylabel="robust accuracy", title="Fashion-MNIST CNN", log_x=True,
        label="natural", series={"robust": ([1, 5, 20], [0.8, 0.7, 0.69])})
    assert got == path
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # something was drawn
    with pytest.raises(FileExistsError, match="never overwrites"):
        curves.plot_curve([0, 1], [1, 0], path, xlabel="a", ylabel="b",
                          title="c")
    assert path.read_bytes() == data
    only_series = curves.plot_curve(
        None, None, tmp_path / "eps.png", xlabel="eps", ylabel="acc",
        title="t", series={"a": ([0, 0.1], [0.9, 0.1])})
    assert only_series.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("kwargs,match", [
    (dict(xs=[0, 1], ys=[1, 0], log_x=True), "log_x"),
    (dict(xs=[0, 1], ys=[1]), "equal-length"),
    (dict(xs=None, ys=None), "nothing to plot"),
    (dict(xs=[0, 1], ys=[1, 0], name="plot.jpg"), "'.png'"),
])
def test_plot_curve_rejects(tmp_path, kwargs, match):
    path = tmp_path / kwargs.pop("name", "p.png")
    with pytest.raises(ValueError, match=match):
        curves.plot_curve(kwargs.pop("xs"), kwargs.pop("ys"), path,
                          xlabel="x", ylabel="y", title="t", **kwargs)
    assert not path.exists()
