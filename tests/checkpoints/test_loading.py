"""`checkpoints.load` of a registered name end to end (registry ->
hash-checked download from a file:// URL -> tensorpack conversion), and
`evaluate.py --checkpoint` on it."""

import dataclasses
import hashlib
import json
import pathlib
import sys

import numpy as np
import pytest

import checkpoints
from checkpoints.published import CHECKPOINTS, GAUSSIAN_AFTER_STAGE

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from test_convert_tensorpack import make_tensors  # noqa: E402
from test_evaluate import run_evaluate  # noqa: E402

NAME = "denoise_resnet50.tiny_test"


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """A tiny R152-Denoise-format file registered under NAME with its
    sha256 and a file:// URL; the cache in tmp_path."""
    tensors = make_tensors("resnet_denoise", seed=2)
    rng = np.random.default_rng(0)  # a 10-class head, as Fashion-MNIST
    tensors["linear/W"] = rng.normal(0, 0.1, (tensors["linear/W"].shape[0],
                                              10))
    tensors["linear/b"] = np.zeros(10)
    path = tmp_path / "published" / "tiny.npz"
    path.parent.mkdir()
    np.savez(path, **tensors)
    spec = dataclasses.replace(
        checkpoints.get("denoise_resnet152.xie2019_in1k"), name=NAME,
        url=path.as_uri(),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        model_kwargs={"name": "resnet50", "blocks": (1, 2, 1, 1), "width": 8,
                      "denoise": GAUSSIAN_AFTER_STAGE},
        num_classes=10, input_size=32)
    monkeypatch.setitem(CHECKPOINTS._entries, NAME, spec)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "cache"))
    return spec, tensors


def test_registered_name_downloads_checks_and_converts(registered, tmp_path):
    spec, tensors = registered
    model = checkpoints.load(NAME)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    np.testing.assert_array_equal(model.get_layer("logits").kernel,
                                  tensors["linear/W"].astype("float32"))
    assert (tmp_path / "cache" / "robust_recipes" / "tiny.npz").exists()


def test_trust_sha256_passes_through_for_a_placed_file(registered,
                                                      tmp_path, monkeypatch):
    """A publisher without a hash: a file the user put in the cache loads
    only with its `trust_sha256`, which is then recorded."""
    from core.errors import UserError

    spec, _ = registered
    monkeypatch.setitem(CHECKPOINTS._entries, NAME,
                        dataclasses.replace(spec, sha256=None))
    src = pathlib.Path(spec.url[len("file://"):])
    cached = tmp_path / "cache" / "robust_recipes" / "tiny.npz"
    cached.parent.mkdir(parents=True)
    src.rename(cached)  # placed by hand; the URL now fails
    with pytest.raises(UserError, match=f"--trust_sha256={spec.sha256}"):
        checkpoints.load(NAME)
    model = checkpoints.load(NAME, trust_sha256=spec.sha256)
    assert model.output_shape == (None, 10)
    record = cached.parent / "sha256_recorded.json"
    assert json.loads(record.read_text()) == {NAME: spec.sha256}
    with pytest.raises(UserError, match="applies to a registered"):
        checkpoints.load(str(cached), trust_sha256=spec.sha256)


def test_wrong_architecture_for_the_registry_entry(registered, monkeypatch):
    spec, _ = registered
    plain = dataclasses.replace(spec, model_kwargs={
        "name": "resnet50", "blocks": (1, 2, 1, 1), "width": 8})
    monkeypatch.setitem(CHECKPOINTS._entries, NAME, plain)
    with pytest.raises(ValueError, match="denoise"):
        checkpoints.load(NAME)


def test_evaluate_checkpoint_flag(registered, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_evaluate(f"--checkpoint={NAME}", "--dataset=fashion_mnist",
                 "--num_examples=20", "--batch_size=10", "--steps=2",
                 "--sanity_examples=0", "--strategy=one_device")
    report_dir = tmp_path / "reports" / NAME
    (report,) = [json.loads(p.read_text())
                 for p in report_dir.glob("*.json")]
    assert report["model"] == NAME and report["n"] == 20
    attack = report["attack"]  # the registry's threat model
    assert attack["targeted"] and attack["eps"] == pytest.approx(16 / 255)
    assert report["max_linf"] <= 16 / 255 + 1e-6


def test_evaluate_refuses_a_class_count_mismatch(registered, tmp_path,
                                                 monkeypatch):
    from core.errors import UserError

    spec, _ = registered
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="10 logits but cifar100 has 100"):
        run_evaluate(f"--checkpoint={NAME}", "--dataset=cifar100",
                     "--num_examples=8", "--sanity_examples=0")
