"""Destruction rate (Kurakin et al. 2017): the formula on a hand-counted
example, the transforms' contracts and identities, errors, and FGSM
examples of a CNN trained on real Fashion-MNIST."""

import keras
import numpy as np
import pytest
import scipy.ndimage
from keras import ops

import attacks
from evaluation.destruction_rate import (
    DEFAULT_SETTINGS,
    TRANSFORMS,
    apply_transform,
    destruction_rate,
    destruction_table,
)


def mean_level_model(x):
    """Predicts class round(10 * mean pixel): constant images of level
    k / 10 are classified as k, so every prediction is set by hand."""
    k = ops.clip(ops.round(ops.mean(x, axis=(1, 2, 3)) * 10), 0, 9)
    return ops.one_hot(ops.cast(k, "int32"), 10)


def _levels(levels):
    return np.stack([np.full((4, 4, 1), k / 10, np.float32) for k in levels])


# Six images of true class 1. A brightness shift of +0.1 moves every
# prediction up by one class, so T(x_adv) is correct exactly when x_adv was
# predicted 0.
Y = np.ones(6, np.int32)
X = _levels([1, 1, 1, 1, 0, 1])      # image 4 is wrong when clean
X_ADV = _levels([0, 0, 2, 5, 0, 1])  # image 5 is not fooled
# counted (clean right, adv wrong): images 0-3 -> denominator 4;
# of these, T(x_adv) = class 1 for images 0 and 1 -> numerator 2.


def test_formula_on_a_hand_counted_example():
    out = destruction_rate(mean_level_model, X, X_ADV, Y,
                           "brightness_contrast", brightness=0.1)
    assert (out["numerator"], out["denominator"]) == (2, 4)
    assert out["rate"] == 0.5
    assert out["transform"] == "brightness_contrast"
    assert out["params"] == {"brightness": 0.1}
    # Image 4 is corrected by T too but must not count: it was wrong clean.
    t = mean_level_model(
        apply_transform(X_ADV, "brightness_contrast", brightness=0.1))
    assert np.sum(np.argmax(t, -1) == Y) == 3


def test_identity_destroys_nothing_and_empty_denominator_is_none():
    out = destruction_rate(mean_level_model, X, X_ADV, Y,
                           "brightness_contrast", brightness=0.0)
    assert (out["rate"], out["numerator"], out["denominator"]) == (0.0, 0, 4)
    out = destruction_rate(mean_level_model, X, X, Y, "blur", sigma=1.0)
    assert out == {"transform": "blur", "params": {"sigma": 1.0},
                   "rate": None, "numerator": 0, "denominator": 0}


def test_table_matches_single_rates_in_order():
    settings = [("brightness_contrast", {"brightness": 0.1}),
                ("brightness_contrast", {"brightness": 0.0}),
                ("noise", {"sigma": 0.0})]
    rows = destruction_table(mean_level_model, X, X_ADV, Y, settings,
                             batch_size=4)
    assert [r["rate"] for r in rows] == [0.5, 0.0, 0.0]
    for row, (name, params) in zip(rows, settings):
        assert row == destruction_rate(mean_level_model, X, X_ADV, Y, name,
                                       **params)


@pytest.fixture(scope="module")
def images(fmnist_test):
    x = fmnist_test[0][:16]
    return {1: x, 3: np.repeat(x, 3, axis=-1) * np.float32([1, .8, .6])}


@pytest.mark.parametrize("name, params", [
    ("jpeg", {"quality": 10}), ("blur", {"sigma": 1.5}),
    ("noise", {"sigma": 0.2}), ("resize", {"scale": 0.4}),
    ("brightness_contrast", {"brightness": 0.2, "contrast": 1.5}),
    ("brightness_contrast", {"brightness": -0.3, "contrast": 0.5})])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_range_and_change(images, name, params, channels):
    x = images[channels]
    out = apply_transform(x, name, **params)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - x).mean() > 1e-3  # the transform did something
    np.testing.assert_array_equal(out, apply_transform(x, name, **params))


@pytest.mark.parametrize("channels", [1, 3])
def test_identity_settings(images, channels):
    x = images[channels]
    for name, params in [("blur", {"sigma": 0}), ("noise", {"sigma": 0}),
                         ("brightness_contrast", {}), ("resize",
                                                       {"scale": 1.0})]:
        np.testing.assert_array_equal(apply_transform(x, name, **params), x)
    # Quality 100 without chroma subsampling: only DCT and YCbCr rounding.
    q100 = apply_transform(x, "jpeg", quality=100, chroma_downsampling=False)
    assert np.abs(q100 - x).mean() < 0.5 / 255
    assert np.abs(q100 - x).max() <= 6 / 255
    q100 = apply_transform(x, "jpeg", quality=100)  # 4:2:0 for RGB
    assert np.abs(q100 - x).mean() < 3 / 255
    # Lower quality loses more.
    errors = [np.abs(apply_transform(x, "jpeg", quality=q) - x).mean()
              for q in (90, 50, 10)]
    assert errors == sorted(errors) and errors[0] > 0


def test_blur_matches_a_separable_gaussian(images):
    x = images[1][:2]
    out = apply_transform(x, "blur", sigma=1.0)
    ref = scipy.ndimage.gaussian_filter1d(x, 1.0, axis=1, mode="reflect")
    ref = scipy.ndimage.gaussian_filter1d(ref, 1.0, axis=2, mode="reflect")
    np.testing.assert_allclose(out, ref, atol=1e-6)
    # The mean brightness is kept (normalised kernel, reflected borders).
    np.testing.assert_allclose(out.mean(), x.mean(), rtol=1e-4)


def test_noise_statistics_and_seed(images):
    x = np.full((8, 28, 28, 1), 0.5, np.float32)
    out = apply_transform(x, "noise", sigma=0.05, seed=3)
    assert abs((out - x).std() - 0.05) < 0.002
    assert abs((out - x).mean()) < 0.002
    np.testing.assert_array_equal(
        out, apply_transform(x, "noise", sigma=0.05, seed=3))
    assert not np.array_equal(
        out, apply_transform(x, "noise", sigma=0.05, seed=4))


def test_resize_keeps_smooth_images():
    # A linear ramp survives bilinear down-up resizing away from the border.
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))
    x = ramp[None, :, :, None]
    out = apply_transform(x, "resize", scale=0.5)
    np.testing.assert_allclose(out[0, 4:-4, 4:-4], x[0, 4:-4, 4:-4],
                               atol=1e-5)


def test_bad_names_params_and_inputs(images):
    x = images[1]
    with pytest.raises(ValueError, match=r"unknown transform 'gauss'.*"
                       r"'blur'.*'brightness_contrast'.*'jpeg'.*'noise'.*"
                       r"'resize'"):
        apply_transform(x, "gauss", sigma=1)
    with pytest.raises(ValueError, match=r"\['radius'\] and is missing "
                       r"\['sigma'\]; accepted: \['sigma'\]"):
        apply_transform(x, "blur", radius=2)
    bad = [("jpeg", {"quality": 0}), ("jpeg", {"quality": 75.0}),
           ("jpeg", {"chroma_downsampling": "no", "quality": 50}),
           ("blur", {"sigma": -1}), ("noise", {"seed": 0.5, "sigma": 0.1}),
           ("brightness_contrast", {"brightness": 2}),
           ("brightness_contrast", {"contrast": -0.1}),
           ("resize", {"scale": 0}), ("resize", {"scale": 1.5}),
           ("resize", {"scale": True})]
    for name, params in bad:
        with pytest.raises(ValueError, match=f"{next(iter(params))} must be"):
            apply_transform(x, name, **params)
    with pytest.raises(ValueError, match=r"missing \['quality'\]"):
        apply_transform(x, "jpeg")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apply_transform(x * 255, "blur", sigma=1)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        apply_transform(np.zeros((1, 8, 8, 2), np.float32), "jpeg",
                        quality=50)
    with pytest.raises(ValueError, match="unknown transform"):
        destruction_table(mean_level_model, X, X_ADV, Y,
                          [("blur", {"sigma": 1}), ("median", {})])
    with pytest.raises(ValueError, match="same"):
        destruction_rate(mean_level_model, X, X_ADV[:5], Y, "blur", sigma=1)
    assert sorted(TRANSFORMS) == sorted({n for n, _ in DEFAULT_SETTINGS})


def test_fgsm_on_trained_cnn_is_partly_destroyed(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:500], fmnist_test[1][:500]
    x_adv = ops.convert_to_numpy(
        attacks.get_attack("fgsm")(model, x, y, eps=0.1))
    rows = destruction_table(model, x, x_adv, y, [
        ("blur", {"sigma": 2.0}), ("noise", {"sigma": 0.3}),
        ("jpeg", {"quality": 10}), ("resize", {"scale": 0.5})])
    print("\n" + "\n".join(
        f"{r['transform']} {r['params']}: {r['numerator']}/"
        f"{r['denominator']} = {r['rate']:.3f}" for r in rows))
    assert rows[0]["denominator"] > 100  # FGSM at 0.1 fools most images
    assert all(r["denominator"] == rows[0]["denominator"] for r in rows)
    assert 0 < rows[0]["rate"] <= 1  # strong blur
    assert 0 < rows[1]["rate"] <= 1  # heavy noise


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_and_resize_equal_tensorflows(images, channels):
    """Pillow's libjpeg round trip and keras.ops resizing give exactly the
    pixels of the former tf.io.encode_jpeg / decode_jpeg (accurate integer
    DCT) and tf.image.resize implementation."""
    import tensorflow as tf

    x = images[channels]
    pixels = tf.cast(tf.round(x * 255.0), tf.uint8)
    for quality in (10, 50, 90):
        for chroma in (True, False):
            ref = tf.map_fn(lambda im: tf.io.decode_jpeg(
                tf.io.encode_jpeg(im, quality=quality,
                                  chroma_downsampling=chroma),
                channels=channels, dct_method="INTEGER_ACCURATE"),
                pixels, fn_output_signature=tf.uint8)
            np.testing.assert_array_equal(
                apply_transform(x, "jpeg", quality=quality,
                                chroma_downsampling=chroma),
                ref.numpy().astype(np.float32) / 255.0)
    down = tf.image.resize(x, (11, 11), method="bilinear", antialias=True)
    up = tf.image.resize(down, (28, 28), method="bilinear")
    np.testing.assert_array_equal(apply_transform(x, "resize", scale=0.4),
                                  np.clip(up.numpy(), 0.0, 1.0))
