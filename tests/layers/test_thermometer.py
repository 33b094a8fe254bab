"""Tests for layers/thermometer.py against a numpy reference."""

import keras
import numpy as np
import pytest
from keras import ops

from core import backends
from layers.thermometer import ThermometerEncoding
from tests.layers.layer_harness import run_layer_test, save_load_outputs


def _reference(x, levels, mode):
    """numpy: bit i = x >= float32(i / levels); channel c's levels
    contiguous."""
    t = (np.arange(levels) / levels).astype("float32")
    therm = (np.clip(x, 0, 1)[..., None] >= t).astype("float32")
    if mode == "one_hot":
        nxt = np.concatenate([therm[..., 1:], 0 * therm[..., :1]], -1)
        therm = therm - nxt
    return therm.reshape(x.shape[:-1] + (x.shape[-1] * levels,))


def _inputs(levels, shape=(2, 3, 4, 2)):
    rng = np.random.default_rng(1)
    x = rng.uniform(size=shape).astype("float32")
    # Put exact thresholds i / levels (and 0, 1) at the first pixels.
    edges = np.append((np.arange(levels) / levels).astype("float32"), 1.0)
    flat = x.reshape(-1)
    flat[: len(edges)] = edges
    return flat.reshape(shape)


@pytest.mark.parametrize("mode", ["thermometer", "one_hot"])
@pytest.mark.parametrize("levels", [2, 5, 16])
def test_matches_numpy_reference(levels, mode):
    x = _inputs(levels)
    got = np.asarray(ThermometerEncoding(levels=levels, mode=mode)(x))
    np.testing.assert_array_equal(got, _reference(x, levels, mode))


def test_threshold_convention_and_layout():
    # x = 2/4 turns on bits 0, 1, 2 (x >= i / levels, inclusive).
    x = np.array([0.0, 0.5, 0.2499, 1.0], "float32").reshape(1, 1, 1, 4)
    got = np.asarray(ThermometerEncoding(levels=4)(x)).reshape(4, 4)
    np.testing.assert_array_equal(
        got, [[1, 0, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    )
    one_hot = np.asarray(ThermometerEncoding(levels=4, mode="one_hot")(x))
    np.testing.assert_array_equal(
        one_hot.reshape(4, 4).argmax(-1), [0, 2, 0, 3]
    )


def test_one_hot_is_floor_bucket_off_thresholds():
    x = np.random.default_rng(2).uniform(size=(3, 5, 5, 3)).astype("float32")
    got = np.asarray(ThermometerEncoding(levels=10, mode="one_hot")(x))
    idx = np.minimum(np.floor(x * 10), 9).astype(int)
    np.testing.assert_array_equal(got.reshape(x.shape + (10,)).argmax(-1), idx)
    np.testing.assert_array_equal(got.sum(-1), 3)


def _input_grad(layer, x):
    """`(layer(x), d loss / dx)` as numpy; the gradient is None where the
    backend has none (TensorFlow: `core.backends.value_and_grad`'s "no
    gradient" ValueError; JAX gives zeros)."""

    def objective(v):
        y = layer(v)
        weights = ops.arange(y.shape[-1], dtype=y.dtype)
        return ops.sum(y * weights), y

    try:
        _, y, grad = backends.value_and_grad(objective, x)
    except ValueError as e:
        if "no gradient" not in str(e):
            raise
        return np.asarray(layer(x)), None
    return np.asarray(y), np.asarray(grad)


@pytest.mark.parametrize("mode", ["thermometer", "one_hot"])
def test_soft_surrogate_forward_exact_gradient_nonzero(mode):
    x = _inputs(8)
    hard, hard_grad = _input_grad(ThermometerEncoding(8, mode=mode), x)
    soft, soft_grad = _input_grad(
        ThermometerEncoding(8, mode=mode, surrogate="soft"), x
    )
    np.testing.assert_array_equal(soft, hard)
    assert hard_grad is None or not np.any(hard_grad)
    assert np.count_nonzero(soft_grad) > x.size // 2


def test_soft_encode_formula():
    x = np.array([0.3], "float32").reshape(1, 1, 1, 1)
    soft = ThermometerEncoding(levels=4).soft_encode(x)
    np.testing.assert_allclose(np.ravel(soft), [1.0, 0.2, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{"levels": 4}, {"levels": 3, "mode": "one_hot", "surrogate": "soft"}],
)
def test_layer_contract(kwargs):
    lv = kwargs["levels"]
    run_layer_test(ThermometerEncoding, kwargs, (2, 4, 4, 3), (2, 4, 4, 3 * lv))


def test_keras_save_load_round_trip():
    inputs = keras.Input((5, 5, 2))
    h = ThermometerEncoding(levels=6, mode="one_hot", surrogate="soft")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3)(h))
    x = _inputs(6, (2, 5, 5, 2))
    before, after = save_load_outputs(model, x)
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"levels": 1}, "levels"),
        ({"levels": 4.0}, "levels"),
        ({"levels": True}, "levels"),
        ({"mode": "onehot"}, "'onehot'"),
        ({"surrogate": "bpda"}, "'bpda'"),
    ],
)
def test_bad_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ThermometerEncoding(**kwargs)


def test_threat_model_flags():
    assert ThermometerEncoding.differentiable is False
    assert ThermometerEncoding.randomized is False
