"""evaluate.py on a smoke-trained workdir: table, JSON report, no
overwriting, flags over the recipe's threat model."""

import json
import pathlib
import sys

import pytest

from tests.train_utils import run_evaluate, run_train



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
    # gradient-masking checks come with every evaluation, plots included
    names = [c["name"] for c in report["sanity"]["checks"]]
    assert names == ["eps_curve", "steps_curve", "whitebox_beats",
                     "gradient"], names
    assert report["sanity"]["eps_curve"]["acc"][-1] <= 0.05  # eps = 1
    for suffix in ("_eps_curve.png", "_steps_curve.png"):
        assert (workdir / "reports" / f"pgd-2_linf_eps0.1000{suffix}"
                ).read_bytes()[:4] == b"\x89PNG"
    md = (workdir / "reports" / "pgd-2_linf_eps0.1000.md").read_text()
    assert "sanity checks" in md and "checks passed" in md


def test_transfer_matrix_and_destruction_flags(workdir, tmp_path):
    run_evaluate(f"--workdir={workdir}", "--transfer_matrix", "--destruction",
                 f"--transfer_from={workdir / 'model.keras'}",
                 "--sanity_examples=32", "--num_examples=32",
                 "--output=" + str(tmp_path / "tm.json"))
    report = json.loads((tmp_path / "tm.json").read_text())
    matrix = report["transfer_matrix"]
    assert len(matrix["names"]) == 2 and len(matrix["error"]) == 2
    # the same network twice: transfer equals white-box
    assert matrix["error"][0][1] == pytest.approx(matrix["error"][0][0],
                                                  abs=0.05)
    table = report["destruction"]
    assert {r["transform"] for r in table} == {
        "jpeg", "blur", "noise", "brightness_contrast", "resize"}
    assert all(r["rate"] is None or 0 <= r["rate"] <= 1 for r in table)
    assert "Destruction rates" in (tmp_path / "tm.md").read_text()


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
    from core.errors import UserError

    with pytest.raises(UserError, match="exactly one of"):
        run_evaluate()
    with pytest.raises(UserError, match="holds no model.keras"):
        run_evaluate(f"--workdir={tmp_path}")


def test_thermometer_model_is_attacked_through_bpda_unless_naive(
        tmp_path, fmnist_test, capsys):
    """A thermometer-encoded CNN (naturally trained on 2000 real images)
    has no input gradient. evaluate.py attacks it through BPDA on its own
    (Athalye et al. 2018, Sec. 4.1) and breaks it; --naive attacks it as it
    is and reports the masked number, flagged as a demonstration."""
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
            "--strategy=one_device", "--sanity_examples=100"]
    run_evaluate(*args)
    run_evaluate(*args, "--naive")
    assert "gradient-masked demonstration" in capsys.readouterr().out
    reports = tmp_path / "reports"
    bpda = json.loads((reports / "pgd-10_linf_eps0.1000_bpda.json"
                       ).read_text())
    naive = json.loads((reports / "pgd-10_linf_eps0.1000_naive.json"
                        ).read_text())
    print("thermometer: clean", bpda["clean_acc"], "BPDA",
          bpda["robust_acc"], "naive", naive["robust_acc"])
    assert bpda["attack"]["bpda"] is True and naive["attack"]["naive"]
    assert bpda["threat_model"]["non_differentiable_layers"]
    assert bpda["clean_acc"] == naive["clean_acc"] > 0.6
    assert naive["robust_acc"] > naive["clean_acc"] - 0.15  # masked
    assert bpda["robust_acc"] < naive["robust_acc"] - 0.3
    assert bpda["max_linf"] <= 0.1 + 1e-6
    # the naive run's gradient check fails and is reported
    checks = {c["name"]: c["passed"] for c in naive["sanity"]["checks"]}
    assert checks == {"gradient": False}
    assert "naive" in (reports / "pgd-10_linf_eps0.1000_naive.md"
                       ).read_text()


def test_suite_report_markdown_and_resume(workdir, capsys):
    args = [f"--workdir={workdir}", "--suite=caad_targeted", "--eps=0.1",
            "--steps=1,3", "--batch_size=32", "--num_examples=64"]
    run_evaluate(*args)
    out = capsys.readouterr().out
    assert "pgd-3_targeted" in out and "Clean accuracy" in out
    stem = str(workdir / "reports" / "suite_caad_targeted_eps0.1000")
    report = json.loads(pathlib.Path(stem + ".json").read_text())
    assert report["n"] == 64 and set(report["attackers"]) == {
        "pgd-1_targeted", "pgd-3_targeted"}
    assert pathlib.Path(stem + ".md").exists()
    # An interrupted rerun: its log holds the header and the first batch.
    lines = pathlib.Path(stem + ".jsonl").read_text().splitlines()
    assert len(lines) == 3
    partial = pathlib.Path(stem + ".partial.jsonl")
    partial.write_text("\n".join(lines[:2]) + "\n")
    run_evaluate(*args)
    assert "resuming from" in capsys.readouterr().out
    again = json.loads((workdir / "reports" /
                        "suite_caad_targeted_eps0.1000_1.json").read_text())
    assert again["attackers"] == report["attackers"]
    assert not partial.exists()


def test_caad_submission_mode(workdir, tmp_path, fmnist_test):
    import tensorflow as tf

    images = tmp_path / "png"
    images.mkdir()
    for i in range(5):
        png = tf.io.encode_png(
            tf.cast(fmnist_test[0][i] * 255, tf.uint8)).numpy()
        (images / f"img{i}.png").write_bytes(png)
    out = tmp_path / "pred.csv"
    run_evaluate(f"--workdir={workdir}", f"--caad_input_dir={images}",
                 f"--caad_output={out}")
    rows = out.read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("img0.png,")


def test_fresh_process_loads_models_with_custom_layers(tmp_path):
    """`python evaluate.py` in a new process (no module imported by other
    tests) loads a CIFAR ResNet, whose shortcut layer is registered by
    `models`, not `layers`; this failed once on a trained workdir."""
    import subprocess

    import models

    net = models.create_model("resnet20", num_classes=10,
                              input_shape=(28, 28, 1), width=4,
                              blocks=(1, 1, 1), mean=0.5, std=0.25)
    net.save(tmp_path / "model.keras")
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "evaluate.py", f"--model={tmp_path / 'model.keras'}",
         "--dataset=fashion_mnist", "--num_examples=8", "--batch_size=8",
         "--eps=0.1", "--step_size=0.05", "--steps=1",
         "--sanity_examples=0", f"--output={tmp_path / 'r.json'}"],
        cwd=root, capture_output=True, text=True,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 8
