"""Tests for `layers.stochastic_activation_pruning` (Dhillon et al. 2018)."""

import keras
import numpy as np
import pytest
from keras import ops

from core import backends
from layers.stochastic_activation_pruning import (
    StochasticActivationPruning, prune_and_rescale)
from tests.layers.layer_harness import (compiled_step, run_layer_test,
                                        save_load_outputs)


def _keep_prob(a, r):
    """Numpy keep probability 1 - (1 - p)^r per row of a (batch, n)."""
    mag = np.abs(a).astype("float64")
    p = mag / mag.sum(axis=1, keepdims=True)
    q = 1.0 - (1.0 - p) ** r
    return np.where(q > 0, q, np.inf)  # a_j = 0 -> a_j / q_j = 0


def _activations(batch=4, shape=(3, 3, 2), seed=0):
    """Post-ReLU-like activations: half exact zeros, the rest in (0, 2)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.0, 2.0, size=(batch,) + shape)
    a[rng.uniform(size=a.shape) < 0.5] = 0.0
    return a.astype("float32")


def test_layer_contract():
    run_layer_test(StochasticActivationPruning, {"ratio": 0.5, "seed": 1},
                   (2, 4, 4, 3), (2, 4, 4, 3))


def test_threat_model_flags():
    assert StochasticActivationPruning.randomized is True
    assert StochasticActivationPruning.differentiable is True


def test_prune_and_rescale_matches_numpy():
    """Given the sample counts, the mask and rescale follow Algorithm 1."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 10)).astype("float32")
    a[0, :4] = 0.0
    counts = rng.integers(0, 3, size=(3, 10)).astype("int32")
    r = 10
    expected = np.where(counts > 0, a / _keep_prob(a, r), 0.0)
    got = prune_and_rescale(a, counts, r)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected,
                               rtol=1e-5, atol=1e-6)


def _check_closed_form(x, y, r):
    """Kept entries equal a / (1 - (1 - p)^r); the others are zero."""
    a = x.reshape(len(x), -1)
    out = np.asarray(y).reshape(len(x), -1)
    kept = out != 0
    assert not np.any(kept & (a == 0)), "a zero activation became nonzero"
    q = _keep_prob(a, r)
    np.testing.assert_allclose(out[kept], (a / q)[kept], rtol=1e-5)
    # At most r distinct activations are drawn; at least one per example.
    assert np.all(kept.sum(axis=1) <= r)
    assert np.all(kept.sum(axis=1) >= 1)


@pytest.mark.parametrize("ratio", [1.0, 0.25])
def test_output_closed_form_and_zeros(ratio):
    x = _activations()
    layer = StochasticActivationPruning(ratio=ratio, seed=0)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    _check_closed_form(x, keras.ops.convert_to_numpy(y),
                       layer.num_samples(x.shape))


def test_expectation_preserved():
    """E[output] = input (Dhillon et al. 2018, Sec. 3).

    N = 4000 independent draws of one example (tiled along the batch, each
    row sampled independently). Output j is a_j / q_j with probability q_j
    and 0 otherwise, so its standard deviation is a_j sqrt(1 / q_j - 1) and
    the mean's is that over sqrt(N). We allow 5 such standard errors per
    activation: for 18 activations the chance of a false failure is below
    1e-5 (Gaussian tail; N is large enough for the CLT since q_j >= 0.04).
    The empirical keep rate is checked against q_j the same way, and the
    per-draw gradient mask_j / q_j (std sqrt(1 / q_j - 1)) against 1.
    """
    n_draws = 4000
    x = _activations(batch=1, shape=(6, 3), seed=2)
    x[0, 0, 0] = 0.01  # one rarely kept activation
    layer = StochasticActivationPruning(seed=0)
    r = layer.num_samples(x.shape)
    xs = ops.convert_to_tensor(np.repeat(x, n_draws, axis=0))

    def objective(v):
        out = layer(v)
        return ops.sum(out), out

    _, y, grad = backends.value_and_grad(objective, xs)
    grad = ops.convert_to_numpy(grad).reshape(n_draws, -1)
    y = keras.ops.convert_to_numpy(y)
    a = x.reshape(-1).astype("float64")
    y = y.reshape(n_draws, -1).astype("float64")
    q = _keep_prob(a[None], r)[0]
    nz = a != 0
    stderr = np.abs(a[nz]) * np.sqrt((1.0 / q[nz] - 1.0) / n_draws)
    assert np.all(np.abs(y.mean(axis=0)[nz] - a[nz]) <= 5 * stderr + 1e-6)
    rate = (y != 0).mean(axis=0)[nz]
    rate_err = np.sqrt(q[nz] * (1 - q[nz]) / n_draws)
    assert np.all(np.abs(rate - q[nz]) <= 5 * rate_err + 1e-6)
    assert np.all(y[:, ~nz] == 0)
    # The per-draw gradient mask / q averages to 1 (same 5-sigma bound).
    g_err = np.sqrt((1.0 / q[nz] - 1.0) / n_draws)
    assert np.all(np.abs(grad.mean(axis=0)[nz] - 1.0) <= 5 * g_err + 1e-6)


def test_inactive_is_identity():
    x = _activations()
    y = StochasticActivationPruning(active=False, seed=0)(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(y), x)


def test_all_zero_example_stays_zero():
    x = _activations(batch=2)
    x[1] = 0.0
    y = keras.ops.convert_to_numpy(StochasticActivationPruning(seed=0)(x))
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[1], 0.0)


def test_fixed_seed_reproducible_and_calls_differ():
    x = _activations(batch=8)
    a, b = (StochasticActivationPruning(seed=7) for _ in range(2))
    ya1, ya2 = a(x), a(x)
    yb1, yb2 = b(x), b(x)
    np.testing.assert_array_equal(ya1, yb1)
    np.testing.assert_array_equal(ya2, yb2)
    assert not np.array_equal(ya1, ya2)


def test_inside_compiled_function_and_gradient():
    """Inside `tf.function` / `jax.jit` (core.backends.compile_fn)."""
    x = _activations(batch=8)
    layer = StochasticActivationPruning(seed=3)
    r = layer.num_samples(x.shape)

    step = compiled_step(layer)

    y1, g = (ops.convert_to_numpy(t) for t in step(x))
    y2, _ = step(x)
    _check_closed_form(x, y1, r)
    # state advances
    assert not np.array_equal(y1, ops.convert_to_numpy(y2))
    assert np.all(np.isfinite(g))
    # Gradient mask / q: zero where pruned, 1 / q where kept (unbiased for
    # the identity Jacobian of E[output]).
    q = _keep_prob(x.reshape(8, -1), r).reshape(x.shape)
    kept = y1 != 0
    np.testing.assert_allclose(g, np.where(kept, 1 / q, 0.0), rtol=1e-5)


def test_keras_save_load(tmp_path):
    inputs = keras.Input((4, 4, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu")(inputs)
    h = StochasticActivationPruning(ratio=0.5, seed=5)(h)
    model = keras.Model(inputs, h)
    x = _activations(batch=2, shape=(4, 4, 2))
    before, after = save_load_outputs(model, x)
    np.testing.assert_allclose(before, after, rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 0}, "ratio must be"),
    ({"ratio": -1.0}, "ratio must be"),
    ({"ratio": float("nan")}, "ratio must be"),
    ({"ratio": "1"}, "ratio must be"),
    ({"active": "yes"}, "active must be one of"),
])
def test_bad_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StochasticActivationPruning(**kwargs)
