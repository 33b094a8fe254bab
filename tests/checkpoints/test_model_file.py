"""`checkpoints.load_model_file`: the checked `.keras` loader. Every bad
file is one `UserError` line that names it; a good one loads (a saved
trainer as its network)."""

import json
import zipfile

import keras
import numpy as np
import pytest

import checkpoints
from checkpoints import load_model_file
from core.errors import UserError

SHAPE = (8, 8, 3)


def _net():
    return keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(),
                             keras.layers.Dense(2, name="logits")])


@pytest.fixture
def saved(tmp_path):
    net = _net()
    path = tmp_path / "model.keras"
    net.save(path)
    return path, net


def _refused(path, match, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as e:
        load_model_file(path, **kwargs)
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    return message


def test_loads_a_good_file(saved):
    path, net = saved
    model = load_model_file(str(path), expected_input_shape=SHAPE)
    assert model.input_shape == (None, *SHAPE)
    x = np.random.default_rng(0).random((2, *SHAPE), dtype="float32")
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               net.predict(x, verbose=0), rtol=1e-6)
    assert checkpoints.load(str(path)).output_shape == (None, 2)


def test_a_saved_trainer_gives_its_net(tmp_path):
    from training.adversarial import AdversarialTrainer

    trainer = AdversarialTrainer(_net())
    trainer.build((None, *SHAPE))
    path = tmp_path / "trainer.keras"
    trainer.save(path)
    model = load_model_file(path)
    assert not isinstance(model, AdversarialTrainer)
    assert model.output_shape == (None, 2)


def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.keras", "no model file at")


def test_directory(tmp_path):
    (tmp_path / "run.keras").mkdir()
    _refused(tmp_path / "run.keras", "is a directory")


def test_wrong_suffix(saved):
    path, _ = saved
    h5 = path.with_suffix(".h5")
    h5.write_bytes(path.read_bytes())
    _refused(h5, r"has suffix '\.h5'; accepted: \.keras")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.keras"
    path.touch()
    _refused(path, r"is empty \(0 bytes\)")


def test_truncated_file(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    half = tmp_path / "half.keras"
    half.write_bytes(data[:len(data) // 2])
    _refused(half, r"is not a Keras zip archive \(truncated or corrupt")


def test_text_file_renamed(tmp_path):
    path = tmp_path / "notes.keras"
    path.write_text("just some text, not a model\n")
    _refused(path, r"is not a Keras zip archive \(truncated or corrupt\)")


def test_corrupt_member(saved, tmp_path):
    path, _ = saved
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("config.json")
        offset = info.header_offset + 30 + len(info.filename) + len(
            info.extra)
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 0xFF  # one flipped byte inside config.json
    bad = tmp_path / "flipped.keras"
    bad.write_bytes(bytes(data))
    _refused(bad, "truncated or corrupt.*config.json")


def test_zip_without_a_model(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    _refused(path, r"is a zip archive but not a Keras model \(no "
             r"config.json\)")


def test_undeserializable_config(saved, tmp_path):
    path, _ = saved
    bad = tmp_path / "unknown_layer.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                config["class_name"] = "NoSuchModelClass"
                data = json.dumps(config)
            dst.writestr(item, data)
    message = _refused(bad, "could not be deserialized: ")
    assert "NoSuchModelClass" in message


def test_input_shape_mismatch(saved):
    path, _ = saved
    message = _refused(path, "the model takes input shape",
                       expected_input_shape=(32, 32, 3))
    assert "(8, 8, 3)" in message and "(32, 32, 3)" in message
    _refused(path, "the model takes input shape",
             expected_input_shape=(8, 8))


def test_none_dims_are_wildcards(tmp_path):
    net = keras.Sequential([keras.Input((None, None, 3)),
                            keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(2)])
    path = tmp_path / "any_size.keras"
    net.save(path)
    assert load_model_file(path, expected_input_shape=(32, 32, 3))
    _refused(path, r"input shape \(None, None, 3\)",
             expected_input_shape=(32, 32, 1))


def test_non_finite_weights(tmp_path):
    net = _net()
    kernel = net.get_layer("logits").kernel
    kernel.assign(np.where(np.arange(kernel.shape[0])[:, None] == 0, np.nan,
                           kernel.numpy()).astype("float32"))
    path = tmp_path / "diverged.keras"
    net.save(path)
    message = _refused(path, "1 of 2 weight tensors are non-finite")
    assert "logits/kernel" in message
    with pytest.raises(UserError, match="non-finite"):
        checkpoints.load(str(path))
