"""`KERAS_BACKEND=jax` works with TensorFlow not installed (issue 15):
train.py trains `pgd_at_cnn_fmnist:smoke` on real Fashion-MNIST and
evaluate.py evaluates its workdir, in subprocesses where every import of
TensorFlow fails (tests/without_tensorflow.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="jax is not installed")


def _run(*args, timeout=900):
    env = {**os.environ, "KERAS_BACKEND": "jax", "OMP_NUM_THREADS": "2",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "without_tensorflow.py"),
         *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


def test_train_and_evaluate_run_without_tensorflow(tmp_path):
    workdir = tmp_path / "run"
    _run("train.py", "--recipe=pgd_at_cnn_fmnist:smoke",
         f"--workdir={workdir}")
    summary = json.loads((workdir / "train_summary.json").read_text())
    assert all(isinstance(v, float) for v in summary["final_logs"].values())
    assert (workdir / "model.keras").exists()
    _run("evaluate.py", f"--workdir={workdir}")
    reports = list((workdir / "reports").glob("*.json"))
    assert reports, sorted(str(p) for p in workdir.rglob("*"))
    report = json.loads(reports[0].read_text())
    assert report["split"] == "test"
