"""R+FGSM, MI-FGSM and ILLC: reductions to FGSM, a closed-form MI-FGSM
reference, contract properties, and ILLC strength on a trained CNN."""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

from attacks.fgsm import fgsm
from attacks.illc import illc, illc_steps
from attacks.mi_fgsm import mi_fgsm
from attacks.rfgsm import rfgsm
from core import backends
from tests.attacks.linear_model import LinearSoftmax, float64_scope, to_numpy

mi_module = importlib.import_module("attacks.mi_fgsm")


LIN = LinearSoftmax(classes=3, seed=1, grad_dtype="float64")
RNG, W, B, linear = LIN.rng, LIN.W, LIN.B, LIN
_inputs, _input_grad = LIN.inputs, LIN.input_grad


ATTACKS = {
    "rfgsm": (rfgsm, dict(seed=0)),
    "rfgsm_alpha0": (rfgsm, dict(alpha=0.0)),
    "mi_fgsm": (mi_fgsm, dict(steps=5)),
    "mi_fgsm_targeted": (mi_fgsm, dict(steps=5, targeted=True)),
    "illc": (illc, {}),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_norm_bound_box_dtype_and_no_mutation(name):
    fn, kwargs = ATTACKS[name]
    x, y = _inputs()
    x_before, eps = x.copy(), 0.05
    x_adv = to_numpy(fn(linear, x, y, eps=eps, **kwargs))
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    np.testing.assert_array_equal(x, x_before)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    linf = np.abs(x_adv - x).reshape(len(x), -1).max(1)
    assert linf.max() <= eps + 1e-6
    assert linf.max() > 0.5 * eps  # it moved


@pytest.mark.parametrize("fn", [rfgsm, mi_fgsm, illc])
def test_float64_keeps_dtype(fn):
    x, y = _inputs()
    with float64_scope():
        out = fn(linear, x.astype("float64"), y, eps=0.05)
        assert keras.backend.standardize_dtype(out.dtype) == "float64"


def test_eps_zero_is_identity():
    x, y = _inputs()
    np.testing.assert_array_equal(
        to_numpy(rfgsm(linear, x, y, eps=0.0, alpha=0.0)), x)
    np.testing.assert_array_equal(to_numpy(mi_fgsm(linear, x, y, eps=0.0)), x)


@pytest.mark.parametrize("targeted", [False, True])
def test_rfgsm_with_alpha_zero_is_fgsm(targeted):
    x, y = _inputs()
    a = rfgsm(linear, x, y, eps=0.07, alpha=0.0, targeted=targeted, seed=3)
    b = fgsm(linear, x, y, eps=0.07, targeted=targeted)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_rfgsm_matches_closed_form_and_seed_is_reproducible():
    x, y = _inputs()
    eps, alpha = 0.08, 0.03
    a = to_numpy(rfgsm(linear, x, y, eps=eps, alpha=alpha, seed=7))
    b = to_numpy(rfgsm(linear, x, y, eps=eps, alpha=alpha, seed=7))
    np.testing.assert_array_equal(a, b)
    noise = to_numpy(backends.stateless_normal(x.shape, (7, 0)))
    x_prime = np.clip(x + alpha * np.sign(noise), 0, 1)
    want = x_prime + (eps - alpha) * np.sign(_input_grad(x_prime, y))
    want = np.clip(np.clip(want, x - eps, x + eps), 0, 1)
    np.testing.assert_allclose(a, want, atol=1e-6)


@pytest.mark.parametrize("targeted", [False, True])
def test_mi_fgsm_one_step_without_momentum_is_fgsm(targeted):
    x, y = _inputs()
    a = mi_fgsm(linear, x, y, eps=0.07, steps=1, step_size=0.07, mu=0.0,
                targeted=targeted)
    b = fgsm(linear, x, y, eps=0.07, targeted=targeted)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


@pytest.mark.parametrize("mu", [1.0, 0.5])
def test_mi_fgsm_matches_numpy_loop(mu):
    x, y = _inputs()
    eps, steps, step = 0.1, 6, 0.03  # step > eps/steps exercises projection
    x_t, g = x.astype("float64"), np.zeros(x.shape)
    for _ in range(steps):
        grad = _input_grad(x_t, y)
        g = mu * g + grad / np.abs(grad).reshape(len(x), -1).sum(1)[
            :, None, None, None]
        x_t = np.clip(np.clip(x_t + step * np.sign(g), x - eps, x + eps),
                      0, 1)
    got = mi_fgsm(linear, x, y, eps=eps, steps=steps, step_size=step, mu=mu)
    np.testing.assert_allclose(to_numpy(got), x_t, atol=1e-6)


@pytest.mark.tensorflow_only  # tf.function's tracing count
def test_mi_fgsm_no_retracing_across_eps_values():
    x, y = _inputs()
    mi_fgsm(linear, x, y, eps=0.1, steps=2)
    before = mi_module._LOOP.experimental_get_tracing_count()
    for eps in (0.01, 0.02, 0.3):
        mi_fgsm(linear, x, y, eps=eps, steps=3, mu=0.5)
    assert mi_module._LOOP.experimental_get_tracing_count() == before


@pytest.mark.parametrize("eps,want", [
    (0.0, 1), (1 / 255, 2), (4 / 255, 5), (8 / 255, 10), (16 / 255, 20),
    (32 / 255, 36), (0.2, 55),
])
def test_illc_step_count_rule(eps, want):
    # ceil(min(e + 4, 1.25 e)), e = eps in 0-255 units (at least 1).
    assert illc_steps(eps) == want


def test_illc_ignores_y_and_equals_targeted_bim_to_least_likely():
    from attacks.pgd import pgd
    x, y = _inputs()
    y_ll = np.argmin(to_numpy(linear(x)), 1).astype("int32")
    a = illc(linear, x, y, eps=8 / 255)
    b = illc(linear, x, None, eps=8 / 255)
    c = pgd(linear, x, y_ll, eps=8 / 255, step_size=1 / 255, steps=10,
            targeted=True, rand_init=False)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    np.testing.assert_array_equal(to_numpy(a), to_numpy(c))


@pytest.mark.parametrize("fn,kwargs,match", [
    (rfgsm, dict(alpha=0.2), r"alpha must satisfy 0 <= alpha <= eps"),
    (rfgsm, dict(alpha=-0.01), r"alpha must satisfy"),
    (rfgsm, dict(norm="2"), r"rfgsm supports only norm='inf'; got '2'"),
    (rfgsm, dict(norm="l1"), r"norm must be one of"),
    (mi_fgsm, dict(mu=-0.5), r"mu must be a finite number >= 0; got -0.5"),
    (mi_fgsm, dict(norm="2"), r"mi_fgsm supports only norm='inf'"),
    (mi_fgsm, dict(steps=0), r"steps must be an integer >= 1; got 0"),
    (mi_fgsm, dict(step_size=0.0), r"step_size must be a number > 0"),
    (illc, dict(norm="2"), r"illc supports only norm='inf'"),
    (illc, dict(eps=-0.1), r"eps must be a finite number >= 0"),
    (illc, dict(steps=0), r"steps must be an integer >= 1; got 0"),
])
def test_bad_arguments_raise_clear_errors(fn, kwargs, match):
    x, y = _inputs()
    args = dict(eps=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fn(linear, x, y, **args)


@pytest.mark.parametrize("fn", [rfgsm, mi_fgsm, illc])
def test_x_out_of_range_raises(fn):
    x, y = _inputs()
    with pytest.raises(ValueError, match=r"x must lie in \[clip_min"):
        fn(linear, x * 3.0, y, eps=0.1)


# --- strength on a naturally trained Fashion-MNIST CNN (session fixture) ---

def test_illc_reaches_least_likely_class(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:200], fmnist_test[1][:200]
    y_ll = np.argmin(model.predict(x, verbose=0), 1)
    # The paper's defaults at eps=0.2: 55 steps of 1/255 (measured 0.775).
    x_paper = to_numpy(illc(model, x, y, eps=0.2))
    # A step of 0.01 with the same 55 steps (measured 0.865).
    x_big = to_numpy(illc(model, x, y, eps=0.2, step_size=0.01))
    for x_adv, floor in ((x_paper, 0.70), (x_big, 0.80)):
        assert np.abs(x_adv - x).max() <= 0.2 + 1e-6
        hit = np.argmax(model.predict(x_adv, verbose=0), 1) == y_ll
        assert hit.mean() >= floor, (floor, hit.mean())


def test_mi_fgsm_keeps_single_channel_shapes():
    """Regression: a dynamic reduction axis made the loop's iterate
    (batch, H, W, None) on 1-channel images, which tf.while_loop rejects."""
    import keras
    import numpy as np

    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    x_adv = mi_fgsm(net, x, np.arange(4) % 3, eps=0.1, steps=3)
    assert tuple(x_adv.shape) == x.shape
    assert float(np.abs(x_adv - x).max()) <= 0.1 + 1e-6
