"""A run killed (SIGKILL) or interrupted (Ctrl-C, SIGINT) at a random step
resumes where it stopped and ends with the same weights, bit for bit, as
an uninterrupted run of the same config and seed (training.resume)."""

import csv
import json
import random
import signal
import time

import numpy as np
import pytest

from tests.train_utils import final_weights, train_process

RECIPE = "pgd_at_cnn_fmnist:smoke"
STEPS = 12
# Two epochs, a backup after every step (the smoke recipe's setting).
OVERRIDES = ("--recipe.train.epochs=2",
             f"--recipe.train.steps_per_epoch={STEPS}")


def _state(workdir):
    try:
        return json.loads((workdir / "backup" / "state.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    proc = train_process(workdir, RECIPE, *OVERRIDES)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    return workdir


def _stop_at(workdir, sig, global_step):
    """Starts the run and sends `sig` once it has backed up `global_step`
    steps; returns (Popen, output, state at the signal)."""
    proc = train_process(workdir, RECIPE, *OVERRIDES)
    deadline, seen = time.time() + 600, None
    while time.time() < deadline and proc.poll() is None:
        seen = _state(workdir)
        if seen and seen["global_step"] >= global_step:
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    out = proc.communicate(timeout=600)[0]
    return proc, out, seen


def _assert_same_run(workdir, reference):
    for got, want in zip(final_weights(workdir), final_weights(reference),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    rows = list(csv.DictReader(open(workdir / "log.csv")))
    want_rows = list(csv.DictReader(open(reference / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    # Validation metrics depend on the weights only: identical too.
    assert [r["val_loss"] for r in rows] == [r["val_loss"]
                                            for r in want_rows]


def test_sigkill_at_a_random_step_resumes_bit_identical(tmp_path,
                                                        uninterrupted):
    step = random.Random().randrange(2, 2 * STEPS - 2)
    proc, out, seen = _stop_at(tmp_path, signal.SIGKILL, step)
    assert proc.returncode == -signal.SIGKILL, (step, out)
    assert not (tmp_path / "model.keras").exists()
    rerun = train_process(tmp_path, RECIPE, *OVERRIDES)
    out = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, out
    assert "resuming" in out, out
    _assert_same_run(tmp_path, uninterrupted)


def test_ctrl_c_saves_prints_the_resume_command_and_resumes(tmp_path,
                                                            uninterrupted):
    step = random.Random().randrange(2, 2 * STEPS - 2)
    proc, out, seen = _stop_at(tmp_path, signal.SIGINT, step)
    assert proc.returncode == 130, (step, out)
    assert "resume with the same command" in out, out
    assert "Traceback" not in out, out
    saved = _state(tmp_path)
    # Saved at the step where it stopped (at or after the signal's step).
    assert saved["global_step"] >= seen["global_step"], (saved, seen)
    assert not (tmp_path / "model.keras").exists()
    rerun = train_process(tmp_path, RECIPE, *OVERRIDES)
    out = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, out
    assert (f"at epoch {saved['epoch']} step {saved['step']}" in out), out
    _assert_same_run(tmp_path, uninterrupted)
