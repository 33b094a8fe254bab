"""A training run killed mid-epoch resumes from its backup when rerun."""

import csv
import json
import signal
import time

from tests.train_utils import train_process

RECIPE = "pgd_at_cnn_fmnist:smoke"
OVERRIDES = ("--recipe.train.epochs=3", "--recipe.train.steps_per_epoch=40")


def _metadata(workdir):
    try:
        text = (workdir / "backup" / "training_metadata.json").read_text()
        return json.loads(text)
    except (OSError, ValueError):
        return None


def test_killed_run_resumes_from_backup(tmp_path):
    proc = train_process(tmp_path, RECIPE, *OVERRIDES)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        meta = _metadata(tmp_path)
        # Mid-epoch: the second epoch (index 1) has backed up a few steps.
        if meta and meta["epoch"] == 1 and meta["batch"] >= 5:
            proc.send_signal(signal.SIGKILL)
            killed_at = meta
            break
        time.sleep(0.01)
    out = proc.communicate()[0]
    assert killed_at is not None, f"run was not killed mid-epoch:\n{out}"
    assert not (tmp_path / "model.keras").exists()
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0"]

    rerun = train_process(tmp_path, RECIPE, *OVERRIDES)
    out = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, out
    # The rerun restored the backup (epoch 1 onwards), not epoch 0 again.
    assert "Epoch 1/3" not in out and "Epoch 2/3" in out, out
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert (tmp_path / "model.keras").exists()
