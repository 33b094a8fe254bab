"""Tests for layers/total_variation_minimization.py (Guo et al. 2018)."""

import keras
import numpy as np
import pytest
from keras import ops
from scipy.optimize import minimize

from attacks.bpda import with_straight_through
from core import backends
from layers.total_variation_minimization import TotalVariationMinimization
from tests.layers.layer_harness import run_layer_test, save_load_outputs

SHAPE = (2, 10, 12, 3)  # few shapes: JAX compiles per shape


def _images(shape=SHAPE, seed=0):
    """Piecewise-smooth images in [0, 1] plus noise (TV has work to do)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.3, shape)
    x[:, : shape[1] // 2] += 0.5
    x[:, :, : shape[2] // 3] += 0.2
    return np.clip(x, 0, 1).astype("float32")


def _diffs(z):
    g_h, g_w = np.zeros_like(z), np.zeros_like(z)
    g_h[:, :-1] = z[:, 1:] - z[:, :-1]
    g_w[:, :, :-1] = z[:, :, 1:] - z[:, :, :-1]
    return g_h, g_w


def _objective(z, x, mask, tv_weight, eps=0.0):
    """0.5 ||mask (z - x)||^2 + tv_weight * isotropic TV (eps-smoothed)."""
    g_h, g_w = _diffs(z)
    tv = np.sum(np.sqrt(g_h**2 + g_w**2 + eps**2))
    return 0.5 * np.sum(mask * (z - x) ** 2) + tv_weight * tv


def _smoothed_value_and_grad(v, x, mask, tv_weight, eps):
    z = v.reshape(x.shape)
    g_h, g_w = _diffs(z)
    norm = np.sqrt(g_h**2 + g_w**2 + eps**2)
    a_h, a_w = tv_weight * g_h / norm, tv_weight * g_w / norm
    grad = mask * (z - x)
    grad[:, 1:] += a_h[:, :-1]
    grad[:, :-1] -= a_h[:, :-1]
    grad[:, :, 1:] += a_w[:, :, :-1]
    grad[:, :, :-1] -= a_w[:, :, :-1]
    return _objective(z, x, mask, tv_weight, eps), grad.ravel()


def _scipy_reference(x, mask, tv_weight):
    """L-BFGS-B on the TV smoothed by eps, with continuation eps -> 1e-5
    (objective within ~1e-5 relative of the nonsmooth optimum here)."""
    v = x.ravel().astype("float64")
    for eps in (1e-3, 1e-5):
        v = minimize(_smoothed_value_and_grad, v,
                     args=(x, mask, tv_weight, eps), jac=True,
                     method="L-BFGS-B",
                     options={"maxiter": 20000, "ftol": 1e-15,
                              "gtol": 1e-12}).x
    return v.reshape(x.shape)


def _twin(**kwargs):
    """A layer whose draw_mask() replays the first layer's draws."""
    return TotalVariationMinimization(**kwargs)


def test_layer_contract():
    run_layer_test(TotalVariationMinimization, {"steps": 20, "seed": 0},
                   SHAPE, SHAPE)


def test_threat_model_flags():
    assert TotalVariationMinimization.randomized is True
    assert TotalVariationMinimization.differentiable is False


def test_no_dropout_no_tv_is_identity():
    x = _images()
    layer = TotalVariationMinimization(drop_prob=0.0, tv_weight=0.0,
                                       steps=30, seed=0)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), x, atol=1e-6)


def test_no_tv_keeps_kept_pixels_and_fills_with_the_kept_mean():
    x = _images()
    mask = (np.random.default_rng(1).uniform(size=SHAPE) > 0.5)
    mask = mask.astype("float32")
    layer = TotalVariationMinimization(tv_weight=0.0, steps=30)
    got = ops.convert_to_numpy(layer.reconstruct(x, mask))
    mean = (mask * x).sum(axis=(1, 2), keepdims=True) / mask.sum(
        axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got, mask * x + (1 - mask) * mean, atol=1e-6)


def test_solver_matches_scipy_reference():
    """Same objective value as scipy on a tiny image (the minimizer itself
    need not be unique where pixels are dropped)."""
    x = _images((1, 6, 7, 2), seed=3).astype("float64")
    mask = (np.random.default_rng(4).uniform(size=x.shape) >= 0.5) * 1.0
    tv_weight = 0.1
    layer = TotalVariationMinimization(tv_weight=tv_weight, steps=1000)
    got = ops.convert_to_numpy(layer.reconstruct(
        x.astype("float32"), mask.astype("float32"))).astype("float64")
    ref = _objective(_scipy_reference(x, mask, tv_weight), x, mask,
                     tv_weight)
    value = _objective(got, x, mask, tv_weight)
    assert value <= _objective(x, x, mask, tv_weight) - 0.5
    assert abs(value - ref) <= 1e-4 * ref, (value, ref)


def test_call_is_reconstruct_of_drawn_mask_and_lowers_objective():
    x = _images()
    kwargs = {"drop_prob": 0.5, "tv_weight": 0.03, "seed": 7}
    layer, twin = TotalVariationMinimization(**kwargs), _twin(**kwargs)
    got = ops.convert_to_numpy(layer(x)).astype("float64")
    mask = ops.convert_to_numpy(twin.draw_mask(SHAPE))
    np.testing.assert_allclose(
        got, ops.convert_to_numpy(twin.reconstruct(x, mask)), atol=1e-5)
    assert _objective(got, x, mask, 0.03) < _objective(x, x, mask, 0.03)
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_dropped_pixels_do_not_matter():
    x = _images()
    mask = (np.random.default_rng(2).uniform(size=SHAPE) > 0.5)
    noise = np.random.default_rng(3).uniform(size=SHAPE).astype("float32")
    other = np.where(mask, x, noise)
    layer = TotalVariationMinimization(steps=50)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.reconstruct(x, mask)),
        ops.convert_to_numpy(layer.reconstruct(other, mask)), atol=1e-6)


def test_mask_drop_rate():
    layer = TotalVariationMinimization(drop_prob=0.3, seed=0)
    mask = np.stack([ops.convert_to_numpy(layer.draw_mask(SHAPE))
                     for _ in range(10)])  # 7200 draws, std 0.0054
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert abs((1 - mask).mean() - 0.3) < 0.02
    assert np.abs(mask[0] - mask[1]).max() == 1  # each draw is new


def test_flat_image_is_a_fixed_point():
    x = np.full(SHAPE, 0.4, "float32")
    layer = TotalVariationMinimization(seed=0, steps=50)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), x, atol=1e-6)


def test_calls_differ_and_seed_reproduces():
    x = _images()
    a = TotalVariationMinimization(tv_weight=0.05, steps=50, seed=3)
    b = TotalVariationMinimization(tv_weight=0.05, steps=50, seed=3)
    first, second = (ops.convert_to_numpy(a(x)) for _ in range(2))
    assert np.abs(first - second).max() > 1e-2
    np.testing.assert_allclose(ops.convert_to_numpy(b(x)), first, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(b(x)), second, atol=1e-6)


def test_compiled_calls_advance_and_match_eager():
    """Inside compile_fn (tf.function / jax.jit) and model.predict the
    seed state advances; each call equals the eager twin's call."""
    x = _images()
    kwargs = {"tv_weight": 0.05, "steps": 50, "seed": 5}
    layer, twin = TotalVariationMinimization(**kwargs), _twin(**kwargs)
    compiled = backends.compile_fn(lambda lay, v: lay(v))
    outs = [ops.convert_to_numpy(compiled(layer, ops.convert_to_tensor(x)))
            for _ in range(2)]
    for out in outs:
        np.testing.assert_allclose(out, ops.convert_to_numpy(twin(x)),
                                   atol=1e-5)
    assert np.abs(outs[0] - outs[1]).max() > 1e-2
    inputs = keras.Input(SHAPE[1:])
    model = keras.Model(inputs, TotalVariationMinimization(**kwargs)(inputs))
    np.testing.assert_allclose(model.predict(x, verbose=0), outs[0],
                               atol=1e-5)


def test_keras_save_load():
    inputs = keras.Input(SHAPE[1:])
    h = TotalVariationMinimization(steps=20, seed=2)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(h))
    before, after = save_load_outputs(model, _images())
    np.testing.assert_allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"drop_prob": 1.0}, r"drop_prob must be a float in \[0, 1\)"),
    ({"drop_prob": -0.1}, "drop_prob must be"),
    ({"drop_prob": True}, "drop_prob must be"),
    ({"tv_weight": -1.0}, "tv_weight must be a finite float >= 0"),
    ({"tv_weight": float("inf")}, "tv_weight must be"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"steps": 10.0}, "steps must be"),
])
def test_bad_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TotalVariationMinimization(**kwargs)


def test_bad_input_raises_on_build():
    with pytest.raises(ValueError, match="expects"):
        TotalVariationMinimization()(keras.Input((8, 3)))


def test_straight_through_gradient_is_exact_and_finite():
    """`attacks.bpda.with_straight_through`, compiled: the input gradient of
    sum(output) is exactly ones, so the layer leaks no gradient of its own
    (nor NaN) into the identity surrogate."""
    x = ops.convert_to_tensor(_images())
    inputs = keras.Input(tuple(x.shape[1:]))
    layer = TotalVariationMinimization(steps=20, seed=0)
    model = with_straight_through(keras.Model(inputs, layer(inputs)))
    step = backends.compile_fn(lambda net, v: backends.value_and_grad(
        lambda u: (ops.sum(net(u)), None), v))
    value, _, grad = step(model, x)
    np.testing.assert_array_equal(ops.convert_to_numpy(grad), 1.0)
    assert np.isfinite(float(value))
