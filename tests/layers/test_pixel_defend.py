"""Tests for layers/pixel_defend.py against a numpy reference of Song et
al. 2018's Algorithm 1 that calls the same PixelCNN pixel by pixel."""

import keras
import numpy as np
import pytest
from keras import ops

from core import backends
from layers.pixel_defend import FASHION_MNIST_EPS_DEFEND, PixelDefend
from models.pixelcnn import pixelcnn
from tests.layers.layer_harness import save_load_outputs

SHAPE = (6, 6, 1)
LEVELS = 16
EPS = 2 / 15  # two levels


@pytest.fixture(scope="module")
def pcnn():
    keras.utils.set_random_seed(0)
    model = pixelcnn(SHAPE, filters=8, num_layers=2, levels=LEVELS)
    rng = np.random.default_rng(1)
    for w in model.weights:  # larger, non-zero weights: peaked conditionals
        w.assign(rng.normal(size=w.shape) * (0.5 if "bias" in w.path else
                                             1.0))
    return model


def _images(batch=3, seed=0, on_grid=False):
    x = np.random.default_rng(seed).uniform(size=(batch,) + SHAPE)
    if on_grid:
        x = np.round(x * (LEVELS - 1)) / (LEVELS - 1)
    return x.astype("float32")


def _level_values():
    return (np.arange(LEVELS, dtype="float64") / (LEVELS - 1)).astype(
        "float32")


def reference(model, x, eps):
    """Algorithm 1 of Song et al. 2018 in numpy: raster order, one model
    call per pixel on the partially purified image."""
    x = np.clip(x, 0.0, 1.0)
    image = x.copy()
    grid = np.arange(LEVELS)
    for i in range(SHAPE[0]):
        for j in range(SHAPE[1]):
            logits = np.asarray(model(image))[:, i, j, :]
            centre = x[:, i, j, 0].astype("float64") * (LEVELS - 1)
            allowed = np.abs(grid[None] - centre[:, None]) <= (
                eps * (LEVELS - 1) + 1e-3)
            allowed |= grid[None] == np.round(centre)[:, None]
            best = np.where(allowed, logits, -np.inf).argmax(axis=-1)
            image[:, i, j, 0] = _level_values()[best]
    return image


def _compiled(layer, x):
    fn = backends.compile_fn(lambda lay, v: lay(v))
    return ops.convert_to_numpy(fn(layer, ops.convert_to_tensor(x)))


@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("on_grid", [False, True])
def test_matches_numpy_reference(pcnn, mode, on_grid):
    x = _images(on_grid=on_grid)
    layer = PixelDefend(pcnn, eps_defend=EPS)
    got = (ops.convert_to_numpy(layer(x)) if mode == "eager"
           else _compiled(layer, x))
    want = reference(pcnn, x, EPS)
    np.testing.assert_array_equal(got, want)
    # The purification does something: not merely the quantized input.
    assert np.any(got != np.round(x * (LEVELS - 1)) / (LEVELS - 1))


def test_within_eps_and_on_grid(pcnn):
    x = _images(batch=4, seed=2)
    x[0, 0, :3, 0] = [0.0, 1.0, 0.5]
    y = ops.convert_to_numpy(PixelDefend(pcnn, eps_defend=EPS)(x))
    assert y.shape == x.shape and y.dtype == np.float32
    levels = np.round(y * (LEVELS - 1)).astype(int)
    np.testing.assert_array_equal(y, _level_values()[levels])
    nearest = np.abs(np.round(x * (LEVELS - 1)) / (LEVELS - 1) - x)
    assert np.all(np.abs(y - x) <= np.maximum(EPS, nearest) + 1e-6)


def test_on_grid_inputs_use_the_integer_window(pcnn):
    x = _images(on_grid=True, seed=3)
    y = ops.convert_to_numpy(PixelDefend(pcnn, eps_defend=EPS)(x))
    shift = np.round((y - x) * (LEVELS - 1))
    assert shift.min() >= -2 and shift.max() <= 2
    assert np.any(np.abs(shift) == 2)


def test_eps_zero_quantizes(pcnn):
    x = _images(seed=4)
    x[0, 0, 0, 0] = 1.3  # clipped to 1
    y = ops.convert_to_numpy(PixelDefend(pcnn, eps_defend=0)(x))
    want = _level_values()[np.round(np.clip(x, 0, 1) * (LEVELS - 1))
                           .astype(int)]
    np.testing.assert_array_equal(y, want)


def test_eps_one_is_greedy_decoding(pcnn):
    """With the whole range allowed, the output is the PixelCNN's greedy
    (argmax) decoding, whatever the input."""
    layer = PixelDefend(pcnn, eps_defend=1.0)
    a = ops.convert_to_numpy(layer(_images(seed=5)))
    b = ops.convert_to_numpy(layer(_images(seed=6)))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], a[1])


def test_config_round_trip(pcnn):
    layer = PixelDefend(pcnn, eps_defend=0.25, name="pd")
    config = layer.get_config()
    assert config["eps_defend"] == 0.25
    clone = PixelDefend.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert type(revived) is PixelDefend
    assert revived.get_config() == config
    sym = revived(keras.Input(SHAPE))
    assert tuple(sym.shape) == (None,) + SHAPE
    assert layer.compute_output_shape((2,) + SHAPE) == (2,) + SHAPE


def test_keras_save_load_with_classifier(pcnn):
    defended = keras.Sequential([
        keras.Input(SHAPE),
        PixelDefend(pcnn, eps_defend=EPS),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])
    x = _images()
    before, after = save_load_outputs(defended, x)
    np.testing.assert_array_equal(before, after)


def test_flags_and_default_eps(pcnn):
    assert PixelDefend.differentiable is False
    assert PixelDefend.randomized is False
    assert FASHION_MNIST_EPS_DEFEND == pytest.approx(32 / 255)
    assert PixelDefend(pcnn).eps_defend == pytest.approx(32 / 255)


@pytest.mark.parametrize("eps", [-0.1, 1.5, "0.1", True, None])
def test_bad_eps_raises(pcnn, eps):
    with pytest.raises(ValueError, match="eps_defend"):
        PixelDefend(pcnn, eps_defend=eps)


def test_bad_pixelcnn_raises():
    with pytest.raises(ValueError, match="keras.Model"):
        PixelDefend(keras.layers.Dense(3))
    inputs = keras.Input(SHAPE)
    flat = keras.Model(inputs, keras.layers.Dense(3)(
        keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="pixelcnn must map"):
        PixelDefend(flat)


def test_input_shape_mismatch_raises(pcnn):
    with pytest.raises(ValueError, match="PixelDefend input"):
        PixelDefend(pcnn)(keras.Input((7, 6, 1)))
