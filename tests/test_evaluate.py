"""evaluate.py on a smoke-trained workdir: table, JSON report, no
overwriting, flags over the recipe's threat model."""

import json
import sys
from unittest import mock

import pytest
from absl import flags
from absl.testing import flagsaver

from tests.train_utils import run_train


def run_evaluate(*argv):
    import evaluate

    argv = ["evaluate.py", *argv]
    with flagsaver.flagsaver(), mock.patch.object(sys, "argv", argv):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
        evaluate.main([])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval_run")
    run_train(path, "pgd_at_cnn_fmnist:smoke")
    return path


def test_report_follows_the_recipe_threat_model(workdir, capsys):
    run_evaluate(f"--workdir={workdir}", "--strategy=one_device")
    out = capsys.readouterr().out
    assert "clean_acc" in out and "robust_acc (pgd-2_linf_eps0.1000)" in out
    report = json.loads(
        (workdir / "reports" / "pgd-2_linf_eps0.1000.json").read_text())
    assert report["n"] == 64
    assert report["attack"]["eps"] == 0.1 and report["attack"]["steps"] == 2
    assert 0 <= report["robust_acc"] <= report["clean_acc"] <= 1
    assert report["max_linf"] <= 0.1 + 1e-6


def test_flags_override_and_reports_are_never_overwritten(workdir):
    args = [f"--workdir={workdir}", "--strategy=mirrored", "--eps=0.2",
            "--steps=3", "--targeted", "--num_examples=32", "--loss=cw"]
    run_evaluate(*args)
    run_evaluate(*args)
    reports = sorted((workdir / "reports").glob(
        "pgd-3_linf_eps0.2000_cw-loss_targeted*.json"))
    assert len(reports) == 2
    report = json.loads(reports[0].read_text())
    assert report["n"] == 32 and report["strategy"] == "mirrored"
    assert report["attack"]["loss"] == "cw"
    assert report["attack_success_rate"] is not None
    assert report["max_linf"] <= 0.2 + 1e-6


def test_usage_errors(workdir, tmp_path):
    from absl import app

    with pytest.raises(app.UsageError, match="exactly one of"):
        run_evaluate()
    with pytest.raises(app.UsageError, match="no model at"):
        run_evaluate(f"--workdir={tmp_path}")


def test_bpda_flag_breaks_a_thermometer_model_that_masks_gradients(
        tmp_path, fmnist_test):
    """A thermometer-encoded CNN (naturally trained on 2000 real images)
    has no input gradient: naive PGD refuses to report a number, while
    `--bpda` crafts on the straight-through copy and breaks it (Athalye et
    al. 2018, Sec. 4.1)."""
    import keras

    import models
    from data.fashion_mnist import load_fashion_mnist

    x, y = load_fashion_mnist("train")
    x = x[:2000, ..., None].astype("float32") / 255.0
    net = models.create_model(
        "madry_cnn", num_classes=10, input_shape=(28, 28, 1), width=8,
        input_defenses=[{"class_name": "ThermometerEncoding",
                         "config": {"levels": 16}}])
    net.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    net.fit(x, y[:2000], epochs=3, batch_size=50, verbose=0)
    path = tmp_path / "therm.keras"
    net.save(path)
    args = [f"--model={path}", "--dataset=fashion_mnist", "--eps=0.1",
            "--step_size=0.02", "--steps=10", "--num_examples=200",
            "--strategy=one_device"]
    with pytest.raises(ValueError, match="no gradient.*bpda"):
        run_evaluate(*args)
    run_evaluate(*args, "--bpda")
    bpda = json.loads((tmp_path / "reports" /
                       "pgd-10_linf_eps0.1000_bpda.json").read_text())
    assert bpda["attack"]["bpda"] is True
    assert bpda["clean_acc"] > 0.6
    assert bpda["robust_acc"] < bpda["clean_acc"] - 0.3
    assert bpda["max_linf"] <= 0.1 + 1e-6
