"""Keras Applications under our input contract: the frozen "preprocess"
conv equals each module's own `preprocess_input` on 0..255 pixels, and a
user's weights file lands in the model."""

import numpy as np
import pytest
import keras

import checkpoints
from checkpoints import keras_applications as ka


@pytest.mark.parametrize("module,mode", [
    ("resnet", "caffe"), ("resnet_v2", "tf"), ("densenet", "torch"),
    ("efficientnet", "raw")])
def test_affine_equals_preprocess_input(module, mode):
    x = np.random.default_rng(0).random((2, 5, 5, 3)).astype("float32")
    kernel, bias = ka.preprocess_affine(mode)
    ours = np.einsum("bhwk,kc->bhwc", x, kernel[0, 0]) + bias
    mod = getattr(keras.applications, module)
    want = mod.preprocess_input(255.0 * x.copy())
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-4)


def test_user_weights_file_round_trip(tmp_path):
    reference = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=4,
        classifier_activation=None)
    path = tmp_path / "resnet50_user.weights.h5"
    reference.save_weights(path)
    model = ka.load(f"keras_applications.ResNet50:{path}",
                    input_shape=(32, 32, 3), classes=4)
    assert model.layers[1].name == "preprocess"
    assert not model.get_layer("preprocess").trainable
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    want = reference(keras.applications.resnet.preprocess_input(255.0 * x))
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-3)


def test_bad_specs():
    with pytest.raises(ValueError, match="accepted: .*ResNet50"):
        ka.parse("keras_applications.ResNet9000")
    with pytest.raises(ValueError, match="no weights file"):
        ka.load("keras_applications.ResNet50:/nonexistent.h5")
    with pytest.raises(ValueError, match="RGB input"):
        ka.load("keras_applications.ResNet50:none", input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="accepted: a registered"):
        checkpoints.load("no_such_thing")
    with pytest.raises(ValueError, match="no such file"):
        checkpoints.load("/nonexistent/model.keras")
