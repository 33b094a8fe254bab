"""Tests for layers/jpeg_compression.py against Pillow's libjpeg codec."""

import io

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from attacks.bpda import with_straight_through
from core import backends
from layers.jpeg_compression import (CHROMINANCE_TABLE, LUMINANCE_TABLE,
                                     JpegCompression, quantization_table)
from tests.layers.layer_harness import run_layer_test, save_load_outputs

# Few distinct shapes: JAX compiles each eager op once per shape.
GREY, RGB = (4, 20, 28, 1), (4, 20, 28, 3)


def _smooth_images(shape, seed=0):
    """8-bit-valued smooth images in [0, 1]: sums of a few random plane
    waves per channel, rescaled (real-image-like spectra, no test data
    files needed)."""
    n, h, w, c = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w),
                         indexing="ij")
    out = np.zeros(shape)
    for _ in range(4):
        fy, fx = rng.uniform(0.5, 3.0, size=2)
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1, c))
        wave = 2 * np.pi * (fy * yy + fx * xx)[None, :, :, None]
        out += rng.uniform(0.1, 0.3) * np.sin(wave + phase)
    out = (out - out.min()) / (out.max() - out.min())
    return (np.round(out * 255) / 255).astype("float32")


def _pillow_round_trip(x, quality, **save_kwargs):
    """Pillow (libjpeg) encode + decode of each image, in levels 0..255."""
    out = []
    for image in np.round(x * 255).astype(np.uint8):
        grey = image.shape[-1] == 1
        pil = Image.fromarray(image[..., 0] if grey else image,
                              "L" if grey else "RGB")
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=quality, **save_kwargs)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), "float64")
        out.append(back[..., None] if grey else back)
    return np.stack(out)


def _levels(y):
    return ops.convert_to_numpy(y).astype("float64") * 255


def test_layer_contract():
    run_layer_test(JpegCompression, {"quality": 75}, RGB, RGB)
    run_layer_test(JpegCompression, {"quality": 30}, GREY, GREY,
                   run_training=False)


def test_threat_model_flags():
    assert JpegCompression.differentiable is False
    assert JpegCompression.randomized is False


@pytest.mark.parametrize("quality", [1, 10, 50, 75, 100])
def test_quantization_tables_match_pillow(quality):
    """IJG quality scaling, read back from the tables Pillow wrote."""
    x = np.zeros((8, 8, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(x, "RGB").save(buf, "JPEG", quality=quality)
    tables = Image.open(io.BytesIO(buf.getvalue())).quantization
    np.testing.assert_array_equal(
        quantization_table(LUMINANCE_TABLE, quality).ravel(), tables[0])
    np.testing.assert_array_equal(
        quantization_table(CHROMINANCE_TABLE, quality).ravel(), tables[1])


@pytest.mark.parametrize("quality", [25, 50, 75, 90])
def test_matches_pillow_greyscale(quality):
    """libjpeg uses an integer DCT, so a coefficient near a rounding
    boundary can round the other way: that shifts its 8x8 block by a few
    levels. The typical pixel agrees to within a level (over 12 seeds:
    mean <= 0.35, under 8% of pixels off by more than 1, max 10)."""
    x = _smooth_images(GREY, seed=quality)
    diff = np.abs(_levels(JpegCompression(quality)(x))
                  - _pillow_round_trip(x, quality))
    assert diff.mean() < 0.5, diff.mean()
    assert np.mean(diff > 1.01) < 0.1, np.mean(diff > 1.01)
    assert diff.max() <= 12.01, diff.max()


@pytest.mark.parametrize("quality", [50, 75, 90])
def test_matches_pillow_rgb_without_subsampling(quality):
    """As for grey, plus libjpeg's fixed-point colour conversion; a chroma
    coefficient rounded the other way moves R or B by up to ~1.8x its
    chroma error (over 12 seeds: mean <= 0.43, under 9% of pixels off by
    more than 1, max 24)."""
    x = _smooth_images(RGB, seed=quality)
    diff = np.abs(_levels(JpegCompression(quality)(x))
                  - _pillow_round_trip(x, quality, subsampling=0))
    assert diff.mean() < 0.75, diff.mean()
    assert np.mean(diff > 1.01) < 0.15, np.mean(diff > 1.01)
    assert diff.max() <= 32.01, diff.max()


def test_quality_orders_the_distortion():
    x = _smooth_images(GREY, seed=1)
    errors = [np.abs(_levels(JpegCompression(q)(x)) - x * 255).mean()
              for q in (10, 50, 90, 100)]
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] <= 0.5 and errors[0] > 2, errors


def test_output_levels_range_and_clipping():
    x = np.random.default_rng(0).uniform(-0.5, 1.5, RGB)
    y = _levels(JpegCompression(60)(x.astype("float32")))
    assert y.min() >= 0 and y.max() <= 255
    np.testing.assert_allclose(y, np.round(y), atol=1e-3)
    clipped = _levels(JpegCompression(60)(np.clip(x, 0, 1).astype(
        "float32")))
    np.testing.assert_array_equal(y, clipped)


def test_recompression_is_nearly_idempotent():
    x = _smooth_images(GREY, seed=2)
    layer = JpegCompression(75)
    once = layer(x)
    first = np.abs(_levels(once) - x * 255).mean()
    second = np.abs(_levels(layer(once)) - _levels(once)).mean()
    assert second < 0.6 and second < 0.25 * first, (first, second)


@pytest.mark.parametrize("level", [0, 77, 130, 255])
def test_flat_image_stays_flat_as_in_pillow(level):
    """Only the DC coefficient survives; its quantization (ties away from
    zero, as libjpeg) shifts the level exactly as Pillow does."""
    x = np.full(GREY, level / 255, "float32")
    got = _levels(JpegCompression(20)(x))
    want = _pillow_round_trip(x, 20)
    np.testing.assert_allclose(got, want, atol=1e-3)
    np.testing.assert_allclose(got, got[0, 0, 0, 0], atol=1e-3)


def test_compiled_and_predict_match_eager():
    x = _smooth_images(RGB, seed=3)
    layer = JpegCompression(75)
    eager = ops.convert_to_numpy(layer(x))
    compiled = backends.compile_fn(lambda lay, v: lay(v))
    got = ops.convert_to_numpy(compiled(layer, ops.convert_to_tensor(x)))
    np.testing.assert_allclose(got, eager, atol=1e-6)
    inputs = keras.Input(RGB[1:])
    model = keras.Model(inputs, JpegCompression(75)(inputs))
    np.testing.assert_allclose(model.predict(x, verbose=0), eager,
                               atol=1e-6)


def test_keras_save_load():
    inputs = keras.Input(GREY[1:])
    h = JpegCompression(quality=40)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(h))
    before, after = save_load_outputs(model, _smooth_images(GREY))
    np.testing.assert_allclose(before, after, atol=1e-6)


@pytest.mark.parametrize("quality", [0, 101, 75.0, True, "75"])
def test_bad_quality_raises(quality):
    with pytest.raises(ValueError, match=r"quality must be an int in \[1, "):
        JpegCompression(quality)


def test_bad_input_raises_on_build():
    with pytest.raises(ValueError, match="static height"):
        JpegCompression()(keras.Input((None, None, 1)))
    with pytest.raises(ValueError, match="expects"):
        JpegCompression()(keras.Input((8, 3)))


def test_straight_through_gradient_is_exact_and_finite():
    """`attacks.bpda.with_straight_through`, compiled: the input gradient of
    sum(output) is exactly ones, so the layer leaks no gradient of its own
    (nor NaN) into the identity surrogate."""
    x = ops.convert_to_tensor(_smooth_images(GREY))
    inputs = keras.Input(tuple(x.shape[1:]))
    layer = JpegCompression(50)
    model = with_straight_through(keras.Model(inputs, layer(inputs)))
    step = backends.compile_fn(lambda net, v: backends.value_and_grad(
        lambda u: (ops.sum(net(u)), None), v))
    value, _, grad = step(model, x)
    np.testing.assert_array_equal(ops.convert_to_numpy(grad), 1.0)
    assert np.isfinite(float(value))
