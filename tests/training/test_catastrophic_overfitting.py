"""The catastrophic-overfitting early stop (Wong et al. 2020) and the cyclic
learning rate of the fast-AT recipe."""

import keras
import numpy as np
import pytest

from training.catastrophic_overfitting import CatastrophicOverfittingStop
from training.optimization import CyclicLR

NO_ATTACK = {"name": "pgd", "eps": 0.0, "step_size": 0.01, "steps": 1}


def _separable(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype("int32")
    x = np.full((n, 2, 2, 1), 0.2, "float32")
    x[:, 0, 0, 0] = np.where(y == 1, 0.9, 0.1)
    return x, y


def _model():
    net = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(2)])
    w = np.zeros((4, 2), "float32")
    w[0] = [-10.0, 10.0]
    net.set_weights([w, np.array([5.0, -5.0], "float32")])
    net.stop_training = False  # set by fit(); these tests call the hooks
    return net


def test_restores_the_best_epoch_and_stops_on_a_drop():
    x, y = _separable()
    net = _model()
    cb = CatastrophicOverfittingStop(x, y, NO_ATTACK, max_drop=0.2)
    cb.set_model(net)
    logs = {}
    cb.on_epoch_end(0, logs)
    good = [w.copy() for w in net.get_weights()]
    assert logs["heldout_pgd_accuracy"] == 1.0 and not net.stop_training
    net.set_weights([-w for w in good])  # now wrong on every example
    cb.on_epoch_end(1, {})
    assert cb.stopped_epoch == 1 and net.stop_training
    for a, b in zip(net.get_weights(), good):
        np.testing.assert_array_equal(a, b)
    assert [round(a, 3) for _, a in cb.history] == [1.0, 0.0]


def test_a_small_dip_does_not_stop():
    x, y = _separable()
    net = _model()
    cb = CatastrophicOverfittingStop(x, y, NO_ATTACK, max_drop=0.6)
    cb.set_model(net)
    cb.on_epoch_end(0, {})
    w, b = net.get_weights()
    net.set_weights([w, b + np.array([0.0, 8.5], "float32")])  # class 0 flips
    cb.on_epoch_end(1, {})
    assert 0.4 <= cb.history[-1][1] < 1.0
    assert cb.stopped_epoch is None and not net.stop_training


def test_attack_is_applied():
    """With a real PGD budget the measured accuracy is the robust one."""
    x, y = _separable()
    net = _model()
    strong = {"name": "pgd", "eps": 0.5, "step_size": 0.1, "steps": 10,
              "rand_init": False}
    cb = CatastrophicOverfittingStop(x, y, strong)
    cb.set_model(net)
    assert cb.pgd_accuracy() < 0.2


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_drop=0.0), "max_drop"), (dict(max_drop=1.5), "max_drop")])
def test_bad_arguments(kwargs, match):
    x, y = _separable()
    with pytest.raises(ValueError, match=match):
        CatastrophicOverfittingStop(x, y, NO_ATTACK, **kwargs)
    with pytest.raises(ValueError, match="length"):
        CatastrophicOverfittingStop(x, y[:3], NO_ATTACK)


def test_cyclic_lr_is_one_triangle_and_serializes():
    lr = CyclicLR(2e-3, total_steps=100, peak_fraction=0.4)
    got = [float(lr(s)) for s in (0, 20, 40, 70, 100, 120)]
    np.testing.assert_allclose(got, [0.0, 1e-3, 2e-3, 1e-3, 0.0, 0.0],
                               atol=1e-9)
    again = CyclicLR.from_config(lr.get_config())
    assert float(again(40)) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="peak_fraction"):
        CyclicLR(1e-3, 10, peak_fraction=1.0)
