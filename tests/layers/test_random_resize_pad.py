"""Tests for `layers.random_resize_pad` (Xie et al. 2018, arXiv 1711.01991)."""

import keras
import numpy as np
import pytest
from keras import ops

from core import backends
from layers.random_resize_pad import RandomResizePad
from tests.layers.layer_harness import (run_layer_test, save_load_outputs,
                                        traced_step)


def _images(batch=2, size=8, channels=3, seed=0):
    """Strictly positive pixels in [0.1, 1], so padding zeros stand out."""
    rng = np.random.default_rng(seed)
    shape = (batch, size, size, channels)
    return rng.uniform(0.1, 1.0, size=shape).astype("float32")


def _expected(x, rnd, top, left, max_size, interpolation):
    """Resize to rnd x rnd, then paste at (top, left) on a zero canvas."""
    small = ops.convert_to_numpy(ops.image.resize(
        x, (rnd, rnd), interpolation=interpolation, antialias=False))
    out = np.zeros((len(x), max_size, max_size, x.shape[-1]), "float32")
    out[:, top:top + rnd, left:left + rnd] = small
    return out


def _twin(x, **kwargs):
    """A built layer whose draw_params() replays the first layer's draws."""
    twin = RandomResizePad(**kwargs)
    twin.build(x.shape)
    return twin


def test_layer_contract():
    run_layer_test(RandomResizePad, {"max_size": 12, "seed": 0},
                   (2, 8, 8, 3), (2, 12, 12, 3))
    run_layer_test(RandomResizePad,
                   {"max_size": 10, "min_size": 4,
                    "interpolation": "bilinear", "seed": 1},
                   (2, 6, 6, 1), (2, 10, 10, 1), run_training=False)


def test_threat_model_flags():
    assert RandomResizePad.randomized is True
    assert RandomResizePad.differentiable is True


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_content_is_resized_shifted_copy(interpolation):
    x = _images()
    kwargs = {"max_size": 13, "interpolation": interpolation, "seed": 11}
    layer, twin = RandomResizePad(**kwargs), _twin(x, **kwargs)
    for _ in range(4):  # successive calls draw new parameters
        y = keras.ops.convert_to_numpy(layer(x))
        rnd, top, left = (int(v) for v in twin.draw_params())
        assert y.shape == (2, 13, 13, 3)
        want = _expected(x, rnd, top, left, 13, interpolation)
        np.testing.assert_allclose(y, want, atol=1e-6)
        # Zeros exactly outside the pasted region (pixels are >= 0.1).
        inside = np.zeros((13, 13), bool)
        inside[top:top + rnd, left:left + rnd] = True
        assert np.all(y[:, ~inside] == 0)
        assert np.all(y[:, inside] > 0)


def test_draws_cover_the_paper_ranges():
    """rnd in [min_size, max_size), top and left in [0, max_size - rnd]."""
    layer = RandomResizePad(max_size=12, min_size=9, seed=0)
    layer.build((None, 9, 9, 1))
    draws = np.array([[int(v) for v in layer.draw_params()]
                      for _ in range(300)])
    rnd, top, left = draws.T
    assert set(rnd) == {9, 10, 11}
    assert np.all(top <= 12 - rnd) and np.all(left <= 12 - rnd)
    assert np.all(top >= 0) and np.all(left >= 0)
    assert set(top[rnd == 9]) == {0, 1, 2, 3}
    assert set(left[rnd == 11]) == {0, 1}


def _compiled_step():
    """`(layer, x) -> (layer(x), d sum(layer(x)) / dx)`, compiled
    (`tf.function` / `jax.jit` with the layer's seed state passed live)."""

    def step(layer, x):
        def objective(v):
            y = layer(v)
            return ops.sum(y), y

        _, y, grad = backends.value_and_grad(objective, x)
        return y, grad

    return backends.compile_fn(step)


def test_compiled_draws_advance_and_gradient():
    x = ops.convert_to_tensor(_images())
    kwargs = {"max_size": 12, "interpolation": "bilinear", "seed": 4}
    layer, twin = RandomResizePad(**kwargs), _twin(x, **kwargs)
    layer.build(x.shape)
    step = _compiled_step()
    for _ in range(2):  # the seed state advances across compiled calls
        y, g = (ops.convert_to_numpy(t) for t in step(layer, x))
        rnd, top, left = (int(v) for v in twin.draw_params())
        want = _expected(ops.convert_to_numpy(x), rnd, top, left, 12,
                         "bilinear")
        np.testing.assert_allclose(y, want, atol=1e-6)
        assert y.shape == (2, 12, 12, 3)
        assert np.all(np.isfinite(g)) and np.any(g != 0)


@pytest.mark.tensorflow_only
def test_inside_tf_function_and_gradient():
    import tensorflow as tf

    x = tf.constant(_images())
    kwargs = {"max_size": 12, "interpolation": "bilinear", "seed": 4}
    layer, twin = RandomResizePad(**kwargs), _twin(x, **kwargs)

    step = traced_step(layer)

    for _ in range(2):
        y, g = step(x)
        rnd, top, left = (int(v) for v in twin.draw_params())
        want = _expected(x.numpy(), rnd, top, left, 12, "bilinear")
        np.testing.assert_allclose(y.numpy(), want, atol=1e-6)
        assert np.all(np.isfinite(g.numpy())) and np.any(g.numpy() != 0)
    # The symbolic graph still knows the static output shape.
    spec = tf.TensorSpec((None, 8, 8, 3), tf.float32)
    assert step.get_concrete_function(spec).structured_outputs[0].shape \
        .as_list() == [None, 12, 12, 3]


def test_inactive_is_deterministic_centre_pad():
    x = _images(size=8)
    y = RandomResizePad(max_size=12, active=False, seed=0)(x)
    np.testing.assert_array_equal(y, _expected(x, 8, 2, 2, 12, "nearest"))
    # With min_size != input size it first resizes to min_size.
    y = RandomResizePad(max_size=12, min_size=5, active=False,
                        interpolation="bilinear")(x)
    np.testing.assert_allclose(y, _expected(x, 5, 3, 3, 12, "bilinear"),
                               atol=1e-6)


def test_keras_save_load():
    inputs = keras.Input((8, 8, 3))
    h = RandomResizePad(max_size=11, seed=2)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(h))
    before, after = save_load_outputs(model, _images())
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_size": 1}, "max_size must be"),
    ({"max_size": 12.0}, "max_size must be"),
    ({"max_size": 12, "min_size": 12}, r"min_size must be .*\[1, 11\]"),
    ({"max_size": 12, "min_size": 0}, "min_size must be"),
    ({"interpolation": "bicubic"}, "interpolation must be one of"),
    ({"active": 1}, "active must be one of"),
])
def test_bad_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomResizePad(**kwargs)


def test_bad_input_raises_on_build():
    with pytest.raises(ValueError, match="must be < max_size=8"):
        RandomResizePad(max_size=8)(_images(size=8))
    with pytest.raises(ValueError, match="static input height"):
        RandomResizePad(max_size=8)(keras.Input((None, None, 3)))
    with pytest.raises(ValueError, match="expects"):
        RandomResizePad(max_size=8)(keras.Input((5, 3)))
