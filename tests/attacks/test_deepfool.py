"""DeepFool: exact minimal perturbations on a linear model (closed form),
contract properties, and strength on a CNN trained on real Fashion-MNIST."""


import keras
import numpy as np
import pytest
from keras import ops

from attacks.deepfool import deepfool
from tests.attacks.linear_model import LinearSoftmax, float64_scope, to_numpy


LIN = LinearSoftmax(classes=3, seed=0)
RNG, W, B, linear = LIN.rng, LIN.W, LIN.B, LIN


def _inputs(n=8):
    rng = np.random.default_rng(1)
    return rng.uniform(0.4, 0.6, size=(n, 2, 2, 3)).astype("float32")


def _closed_form(x, dual_ord):
    """Per example: min_k |f_k - f_y| / ||w_k - w_y||_q over k != y (the
    distance to the nearest decision boundary in the primal norm), the
    prediction y and the minimising class."""
    z = x.reshape(len(x), 12).astype("float64") @ W + B
    y = z.argmax(1)
    dists, argmins = [], []
    for i in range(len(x)):
        best = (np.inf, -1)
        for k in range(3):
            if k == y[i]:
                continue
            w = W[:, k].astype("float64") - W[:, y[i]]
            d = abs(z[i, k] - z[i, y[i]]) / np.linalg.norm(w, ord=dual_ord)
            best = min(best, (d, k))
        dists.append(best[0])
        argmins.append(best[1])
    return np.array(dists), y, np.array(argmins)


def _logits(x):
    return x.reshape(len(x), 12).astype("float64") @ W + B


@pytest.mark.parametrize("norm,primal,dual", [("2", 2, 2),
                                              ("inf", np.inf, 1)])
def test_linear_model_minimal_perturbation_is_exact(norm, primal, dual):
    x = _inputs()
    want, y, l = _closed_form(x, dual)
    x_adv = to_numpy(deepfool(linear, x, norm=norm, overshoot=0.0, steps=20))
    # The box never binds: the result lies strictly inside it.
    assert np.all((x_adv > 0) & (x_adv < 1))
    r = (x_adv - x).reshape(len(x), -1).astype("float64")
    got = np.linalg.norm(r, ord=primal, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # It lies on the boundary between y and the nearest class l.
    z = _logits(x_adv)
    idx = np.arange(len(x))
    np.testing.assert_allclose(z[idx, l] - z[idx, y], 0.0, atol=1e-4)
    # With a tiny overshoot it is just past the boundary: misclassified.
    x_over = to_numpy(deepfool(linear, x, norm=norm, overshoot=1e-4,
                      steps=20))
    assert np.all(_logits(x_over).argmax(1) != y)
    r_over = (x_over - x).reshape(len(x), -1).astype("float64")
    np.testing.assert_allclose(np.linalg.norm(r_over, ord=primal, axis=1),
                               want * (1 + 1e-4), rtol=1e-4)


def test_linear_model_one_step_suffices():
    x = _inputs()
    want, y, _ = _closed_form(x, 2)
    x_adv = to_numpy(deepfool(linear, x, overshoot=1e-3, steps=1))
    assert np.all(_logits(x_adv).argmax(1) != y)
    got = np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)
    np.testing.assert_allclose(got, want * 1.001, rtol=1e-4)


def test_labels_already_wrong_are_left_unchanged():
    x = _inputs()
    y = (_logits(x).argmax(1) + 1).astype("int32") % 3
    x_adv = to_numpy(deepfool(linear, x, y))
    np.testing.assert_array_equal(x_adv, x)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_eps_projects_the_final_perturbation(norm):
    x = _inputs()
    want, _, _ = _closed_form(x, 2 if norm == "2" else 1)
    eps = float(np.min(want)) / 2
    x_adv = to_numpy(deepfool(linear, x, norm=norm, eps=eps))
    r = (x_adv - x).reshape(len(x), -1)
    got = np.linalg.norm(r, ord=2 if norm == "2" else np.inf, axis=1)
    assert np.all(got <= eps * (1 + 1e-5))
    np.testing.assert_array_equal(_logits(x_adv).argmax(1),
                                  _logits(x).argmax(1))


def test_no_mutation_dtype_and_box():
    x = np.clip(_inputs() + np.linspace(-0.6, 0.6, 12).reshape(2, 2, 3),
                0, 1).astype("float64")
    before = x.copy()
    for norm in ("2", "inf"):
        with float64_scope():
            x_adv = deepfool(linear, x, norm=norm, overshoot=0.5)
            assert keras.backend.standardize_dtype(x_adv.dtype) == "float64"
            assert tuple(x_adv.shape) == x.shape
            x_adv = to_numpy(x_adv)
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm="1"), "norm"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(overshoot=-0.1), "overshoot"),
    (dict(overshoot=float("nan")), "overshoot"),
    (dict(num_classes=1), "num_classes"),
    (dict(eps=-1.0), "eps"),
    (dict(clip_min=1.0, clip_max=0.0), "clip_min"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        deepfool(linear, _inputs(), **kwargs)


def test_x_out_of_range_raises():
    with pytest.raises(ValueError, match="clip_min"):
        deepfool(linear, _inputs() + 1.0)


def test_registered():
    import attacks._registry as reg
    assert reg.ATTACKS.get("deepfool") is deepfool


# --- strength on a naturally trained Fashion-MNIST CNN (session fixture) ---

def test_deepfool_breaks_a_naturally_trained_cnn(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x = fmnist_test[0][:100]
    pred = np.argmax(model.predict(x, verbose=0), 1)
    x_adv = to_numpy(deepfool(model, x, norm="2", steps=50, overshoot=0.02))
    adv_pred = np.argmax(model.predict(x_adv, verbose=0), 1)
    fooled = adv_pred != pred
    norms = np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)
    median = float(np.median(norms))
    print(f"deepfool L2: fooled {fooled.mean():.2f}, median L2 {median:.4f}")
    assert fooled.mean() >= 0.95, fooled.mean()
    assert median < 2.0, median
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
