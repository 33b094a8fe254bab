"""`train.py --init_checkpoint`: fine-tuning a converted (test-built)
tensorpack checkpoint, and one of our own `.keras` models, on real
Fashion-MNIST resized to 32 x 32 x 3, through train.py itself."""

import json
import pathlib
import sys

import keras
import numpy as np
import pytest
from core.errors import UserError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from train_utils import run_train  # noqa: E402

from test_convert_tensorpack import make_tensors  # noqa: E402

RESIZED = ("--recipe.data.image_size=32", "--recipe.data.channels=3")


@pytest.fixture(scope="module")
def denoise_npz(tmp_path_factory):
    """A scaled-down R152-Denoise-format checkpoint (5 classes)."""
    tensors = make_tensors("resnet_denoise", seed=1)
    path = tmp_path_factory.mktemp("npz") / "R152-Denoise-tiny.npz"
    np.savez(path, **{f"{k}:0": v for k, v in tensors.items()})
    return path, tensors


def test_fine_tunes_a_converted_checkpoint(tmp_path, denoise_npz):
    path, tensors = denoise_npz
    run_train(tmp_path, "pgd_at_cnn_fmnist:smoke", *RESIZED,
              f"--init_checkpoint={path}", "--freeze=stem,stage2")
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["init"] == {"checkpoint": str(path),
                           "freeze": ["stem", "stage2"]}
    net = keras.saving.load_model(tmp_path / "model.keras")
    assert net.input_shape == (None, 32, 32, 3)
    assert net.output_shape == (None, 10)  # new head: 5 -> 10 classes
    assert net.get_layer("stage3_denoise") is not None
    # frozen: exactly the checkpoint's values (BGR -> RGB folded in)
    np.testing.assert_array_equal(net.get_layer("stem_conv").kernel,
                                  tensors["conv0/W"][:, :, ::-1, :])
    np.testing.assert_array_equal(
        net.get_layer("stage2_block1_bn1").moving_mean,
        tensors["group0/block0/conv1/bn/mean/EMA"])
    # trained: moved away from the checkpoint
    theta = net.get_layer("stage4_denoise").embedding_theta.kernel
    assert not np.allclose(
        theta, tensors["group2_denoise/embedding_theta/W"])


def test_fine_tunes_our_own_keras_model(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_train(first, "pgd_at_cnn_fmnist:smoke")
    start = keras.saving.load_model(first / "model.keras")
    run_train(second, "pgd_at_cnn_fmnist:smoke",
              f"--init_checkpoint={first / 'model.keras'}")
    tuned = keras.saving.load_model(second / "model.keras")
    assert tuned.output_shape == start.output_shape
    # the head is kept (same classes) and fine-tuned from its old value
    old = np.asarray(start.get_layer("logits").kernel)
    new = np.asarray(tuned.get_layer("logits").kernel)
    assert not np.array_equal(old, new)
    assert np.abs(new - old).max() < np.abs(old).max()


def test_clear_errors(tmp_path, denoise_npz):
    path, _ = denoise_npz
    with pytest.raises(ValueError, match="data.channels=3"):
        run_train(tmp_path / "a", "pgd_at_cnn_fmnist:smoke",
                  f"--init_checkpoint={path}")
    with pytest.raises(ValueError, match="accepted: a registered"):
        run_train(tmp_path / "b", "pgd_at_cnn_fmnist:smoke",
                  "--init_checkpoint=not_a_checkpoint")
    with pytest.raises(UserError, match="needs --init_checkpoint"):
        run_train(tmp_path / "c", "pgd_at_cnn_fmnist:smoke", "--freeze=stem")
    assert not (tmp_path / "a" / "config.json").exists()


def test_fine_tunes_keras_applications_weights(tmp_path):
    """A Keras Applications model from a weights file the user has."""
    published = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=1000,
        classifier_activation=None)
    weights = tmp_path / "mobilenet_v2_user.weights.h5"
    published.save_weights(weights)
    run_train(tmp_path / "run", "pgd_at_cnn_fmnist:smoke", *RESIZED,
              f"--init_checkpoint=keras_applications.MobileNetV2:{weights}",
              "--freeze=preprocess,Conv1")
    net = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert net.output_shape == (None, 10)  # 1000 -> 10 classes
    assert net.get_layer("logits").kernel.shape == (1280, 10)
    np.testing.assert_array_equal(  # frozen: the user's weights
        net.get_layer("Conv1").kernel,
        published.get_layer("Conv1").kernel)
