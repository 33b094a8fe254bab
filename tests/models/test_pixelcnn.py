"""Tests for models/pixelcnn.py and training/pixelcnn.py."""

import math

import keras
import numpy as np
import pytest

from models.pixelcnn import MaskedConv2D, causal_mask, pixelcnn
from tests.layers.layer_harness import save_load_outputs
from training.pixelcnn import bits_per_dim, fit_pixelcnn, quantize

SHAPE = (5, 6, 1)
LEVELS = 8


def _model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    args = dict(filters=6, num_layers=3, levels=LEVELS, kernel_size=3,
                first_kernel_size=5)
    args.update(kwargs)
    model = pixelcnn(SHAPE, **args)
    # Non-zero biases, so that no unit is trivially silent.
    for w in model.weights:
        if w.path.endswith("bias"):
            w.assign(np.random.default_rng(1).normal(size=w.shape) * 0.5)
    return model


def _logits(model, x):
    return model.predict_on_batch(x.astype("float32"))


def test_causal_masks():
    np.testing.assert_array_equal(
        causal_mask((3, 3), "A"), [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(
        causal_mask((3, 3), "B"), [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(causal_mask((1, 1), "A"), [[0]])


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 1}])
def test_autoregressive_property(kwargs):
    """Logits at (i, j) ignore every pixel at or after (i, j) in raster
    order, and do see the pixel just before it."""
    model = _model(**kwargs)
    height, width, _ = SHAPE
    n = height * width
    rng = np.random.default_rng(0)
    base = rng.uniform(size=(1,) + SHAPE)
    # Image p replaces raster positions >= p by fresh random values.
    future = np.repeat(base, n, axis=0).reshape(n, n)
    noise = rng.uniform(size=(n, n))
    after = np.arange(n)[None, :] >= np.arange(n)[:, None]
    future[after] = noise[after]
    out_base = _logits(model, base)[0].reshape(n, LEVELS)
    out_future = _logits(model, future.reshape((n,) + SHAPE))
    out_future = out_future.reshape(n, n, LEVELS)
    for p in range(n):
        np.testing.assert_allclose(out_future[p, p], out_base[p], atol=1e-5,
                                   err_msg=f"position {p}")
    # Changing the pixel on the left (or, in the first column, the pixel
    # above) changes the logits at p.
    neighbour = [p - 1 if p % width else p - width for p in range(n)]
    before = np.repeat(base, n, axis=0).reshape(n, n)
    before[np.arange(1, n), neighbour[1:]] += 0.5
    out_before = _logits(model, before.reshape((n,) + SHAPE))
    out_before = out_before.reshape(n, n, LEVELS)
    for p in range(1, n):
        assert np.abs(out_before[p, p] - out_base[p]).max() > 1e-4, p


def test_output_shape_and_names():
    model = _model()
    assert model.output_shape == (None,) + SHAPE[:2] + (LEVELS,)
    names = {layer.name for layer in model.layers}
    assert {"conv_a", "res1_conv_b", "res2_conv_b", "logits"} <= names
    assert model.get_layer("conv_a").mask_type == "A"
    assert model.get_layer("res2_conv_b").mask_type == "B"


def test_save_load_round_trip():
    model = _model()
    x = np.random.default_rng(0).uniform(size=(2,) + SHAPE).astype("float32")
    before, after = save_load_outputs(model, x)
    np.testing.assert_array_equal(before, after)


def test_masked_conv_serializes():
    layer = MaskedConv2D(4, 3, mask_type="A", use_bias=False, name="m")
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert type(revived) is MaskedConv2D
    assert revived.get_config() == layer.get_config()
    assert revived.mask_type == "A"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_shape": (8, 8, 3)}, "grayscale"),
        ({"image_shape": (8, 8)}, "image_shape"),
        ({"filters": 0}, "filters"),
        ({"num_layers": 0}, "num_layers"),
        ({"levels": 1}, "levels"),
        ({"kernel_size": 2}, "kernel_size"),
        ({"first_kernel_size": 4}, "first_kernel_size"),
    ],
)
def test_bad_model_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pixelcnn(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mask_type": "C"}, "mask_type"),
        ({"kernel_size": 2}, "odd"),
        ({"padding": "valid"}, "padding"),
        ({"strides": 2}, "strides"),
        ({"dilation_rate": 2}, "dilation_rate"),
    ],
)
def test_bad_masked_conv_args_raise(kwargs, match):
    args = {"filters": 4, "kernel_size": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MaskedConv2D(**args)


def test_quantize():
    x = np.array([[[0.0, 0.49, 0.51, 1.2]]], dtype="float32")
    inputs, targets = quantize(x, levels=3)
    np.testing.assert_array_equal(targets, [[[0, 1, 1, 2]]])
    np.testing.assert_allclose(inputs[..., 0], targets / 2.0)
    _, t8 = quantize(np.array([[[0, 128, 255]]], dtype="uint8"))
    np.testing.assert_array_equal(t8, [[[0, 128, 255]]])
    with pytest.raises(ValueError, match="grayscale"):
        quantize(np.zeros((2, 4, 4, 3)))


def _striped_images(num=96, seed=0):
    """Each image is one random level per row: very predictable from the
    pixel on its left."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, LEVELS, size=(num, SHAPE[0], 1))
    levels = np.repeat(rows, SHAPE[1], axis=2)
    return (levels / (LEVELS - 1)).astype("float32")


def test_bits_per_dim_matches_numpy_reference():
    model = _model()
    images = _striped_images(10)
    logits = _logits(model, images[..., None]).astype("float64")
    targets = np.round(images * (LEVELS - 1)).astype(int)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, targets[..., None], axis=-1)
    want = -picked.mean() / math.log(2.0)
    got = bits_per_dim(model, images, batch_size=4)  # a ragged last batch
    assert got == pytest.approx(want, rel=1e-5)


def test_fit_learns_the_data():
    images = _striped_images()
    model, history = fit_pixelcnn(
        images, epochs=20, batch_size=32, learning_rate=1e-2, filters=8,
        num_layers=2, levels=LEVELS, seed=0, verbose=0, kernel_size=3,
        first_kernel_size=3)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    bpd = bits_per_dim(model, _striped_images(seed=1))
    # Uniform: log2(8) = 3 bits; the first pixel of each row carries 3 bits,
    # the other 5 nearly none: about 0.5 bits/dim at the optimum.
    assert bpd < 2.0, bpd
    assert bpd == pytest.approx(
        bits_per_dim(model, _striped_images(seed=1), batch_size=7), rel=1e-5)
