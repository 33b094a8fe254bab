"""Tests for `models.dcgan`: shapes, output range, layer sizes, the
inference-mode generator equals the training-mode one (no batch norm), and
bad arguments raise."""

import keras
import numpy as np
import pytest

from models.dcgan import dcgan_discriminator, dcgan_generator


def test_generator_maps_codes_to_images_in_unit_range():
    g = dcgan_generator(latent_dim=16, width=8)
    z = np.random.default_rng(0).standard_normal((3, 16)).astype("float32")
    z *= 30.0  # large codes saturate the sigmoid, still inside [0, 1]
    x = keras.ops.convert_to_numpy(g(z))
    assert g.input_shape == (None, 16) and x.shape == (3, 28, 28, 1)
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    # No batch norm: inference and training mode are the same function.
    np.testing.assert_array_equal(
        x, keras.ops.convert_to_numpy(g(z, training=True)))
    assert [layer.name for layer in g.layers
            if isinstance(layer, keras.layers.Conv2DTranspose)] == [
        "deconv1", "image"]
    assert g.get_layer("project").units == 7 * 7 * 16
    assert g.get_layer("deconv1").filters == 8


def test_discriminator_maps_images_to_one_logit():
    d = dcgan_discriminator(image_shape=(32, 32, 3), width=4)
    x = np.random.default_rng(1).uniform(size=(2, 32, 32, 3))
    logits = keras.ops.convert_to_numpy(d(x.astype("float32")))
    assert logits.shape == (2, 1) and np.all(np.isfinite(logits))
    assert d.get_layer("conv2").filters == 8
    assert d.get_layer("flatten").output.shape == (None, 8 * 8 * 8)


def test_generator_for_rgb_images():
    g = dcgan_generator(latent_dim=4, image_shape=(32, 32, 3), width=4)
    assert g.output_shape == (None, 32, 32, 3)


@pytest.mark.parametrize("build, kwargs, match", [
    (dcgan_generator, {"latent_dim": 0}, "latent_dim must be a positive"),
    (dcgan_generator, {"width": 2.5}, "width must be a positive int"),
    (dcgan_generator, {"image_shape": (30, 30, 1)}, "multiple of 4"),
    (dcgan_discriminator, {"image_shape": (28, 28)}, "image_shape must be"),
    (dcgan_discriminator, {"width": -1}, "width must be a positive int"),
])
def test_bad_args_raise(build, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)
