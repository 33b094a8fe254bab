"""Exact resume of a killed or interrupted run, at the step where it
stopped.

Layout, under `<workdir>/backup/`:

    state.json                 {"epoch", "step", "global_step", "weights",
                                "metrics"}
    step-00000123.weights.h5   every variable of the trained model: weights,
                               optimizer slots and iteration count, the
                               trainer's random-seed state
    step-00000123.metrics.npz  the running values of the epoch's metrics,
                               and every `keras.random.SeedGenerator` state
                               of the model (which `save_weights` omits)

`Backup` (a Keras callback) writes a new pair every `every_steps` steps,
at every epoch end and on demand (`request_save`, what train.py's Ctrl-C
handler calls), each file atomically (`core.atomic_write`) and
`state.json` last, so a kill at any instant leaves a consistent state:
the previous one or the new one. Older files are deleted after the new
state is in place. A state whose weights or logs are not finite is never
written (the last good one stays).

`read_state` + `restore` bring it back. train.py then skips the
`global_step` batches already seen (`tf.data.Dataset.skip`, or
`ArrayDataset.skip`), finishes the interrupted epoch with a first `fit`
of `steps_per_epoch - step` steps, and runs the remaining epochs with a
second one, so the resumed run sees the same batches in the same order,
with the same optimizer and random state, as an uninterrupted run
(tests/test_resume.py compares the final weights bit for bit).

Keras's own `BackupAndRestore` restores at epoch granularity only, and
writes in place.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import pathlib

import keras
import numpy as np

from core import atomic_write

STATE_NAME = "state.json"


@dataclasses.dataclass(frozen=True)
class ResumeState:
    """Where a run stands: `epoch` (0-based, the one in progress), `step`
    (steps of it done), `global_step` (steps done in all), and the names of
    the weights and metrics files beside `state.json`."""
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    weights: str | None = None
    metrics: str | None = None


#: What Keras's `BackupAndRestore` (which train.py used before) leaves.
LEGACY_WEIGHTS, LEGACY_METADATA = ("latest.weights.h5",
                                   "training_metadata.json")


def read_state(backup_dir: str | pathlib.Path, steps_per_epoch: int = 0
               ) -> ResumeState | None:
    """The saved state in `backup_dir`, or None if there is none. A backup
    of Keras's `BackupAndRestore` (older runs) resumes at its epoch start
    (its `global_step` needs `steps_per_epoch`).

    Raises:
        ValueError: `state.json` is not valid JSON or names a missing file
            (the message names the file).
    """
    path = pathlib.Path(backup_dir) / STATE_NAME
    legacy = pathlib.Path(backup_dir) / LEGACY_METADATA
    if not path.exists() and legacy.exists() and (
            pathlib.Path(backup_dir) / LEGACY_WEIGHTS).exists():
        try:
            epoch = int(json.loads(legacy.read_text())["epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{legacy} is not a Keras backup ({e}); move "
                             "the backup/ folder away to start over"
                             ) from None
        return ResumeState(epoch, 0, epoch * steps_per_epoch,
                           LEGACY_WEIGHTS, None)
    if not path.exists():
        return None
    try:
        state = ResumeState(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path} is not a backup state written by "
                         f"train.py ({e}); move the backup/ folder away "
                         "to start over") from None
    if not (pathlib.Path(backup_dir) / state.weights).is_file():
        raise ValueError(f"{path} names {state.weights}, which is missing; "
                         "move the backup/ folder away to start over")
    return state


def trim_epoch_log(path: str | pathlib.Path, state: ResumeState) -> None:
    """Keeps only the rows of the epochs before `state.epoch` in the CSV
    epoch log `path` (rewritten atomically): a run killed between writing
    an epoch's row and saving the state after it redoes that epoch's end,
    and must not log it twice."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "epoch" not in rows[0]:
        return
    col = rows[0].index("epoch")
    keep = [rows[0]] + [r for r in rows[1:]
                        if len(r) > col and int(r[col]) < state.epoch]
    if len(keep) == len(rows):
        return
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(keep)
    atomic_write.write_text(path, out.getvalue())


def _build_optimizer(model: keras.Model) -> None:
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def restore(model: keras.Model, backup_dir: str | pathlib.Path,
            state: ResumeState) -> None:
    """Loads `state`'s weights (and optimizer, seed state) into the built,
    compiled `model`."""
    _build_optimizer(model)
    model.load_weights(pathlib.Path(backup_dir) / state.weights)
    if state.metrics:
        with np.load(pathlib.Path(backup_dir) / state.metrics) as f:
            saved = [f[k] for k in sorted((k for k in f.files
                                           if k.startswith("seed_")),
                                          key=lambda k: int(k[5:]))]
        variables = seed_states(model)
        if len(saved) != len(variables):
            raise ValueError(
                f"{pathlib.Path(backup_dir) / state.metrics} holds "
                f"{len(saved)} random-generator states but the model has "
                f"{len(variables)}; move the backup/ folder away to start "
                "over")
        for v, value in zip(variables, saved):
            v.assign(value)


def seed_states(model: keras.Model) -> list:
    """The state variables of every `keras.random.SeedGenerator` that
    `model` tracks (the trainer's, a random layer's), in a fixed order;
    `Model.save_weights` does not write them."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _finite_weights(model: keras.Model) -> bool:
    return all(np.isfinite(v).all() for v in model.get_weights())


class Backup(keras.callbacks.Callback):
    """Saves the resume state (module doc).

    Args:
        backup_dir: `<workdir>/backup`.
        every_steps: save every N steps of an epoch as well as at its end;
            None saves at epoch ends only.
        steps_per_epoch: steps of a full epoch.
        start: the state this `fit` starts from (`ResumeState()` for a new
            run); its `step` is added to the batch index of its first epoch.
    """

    def __init__(self, backup_dir: str | pathlib.Path, every_steps: int | None,
                 steps_per_epoch: int, start: ResumeState | None = None):
        super().__init__()
        self.backup_dir = pathlib.Path(backup_dir)
        self.every_steps = every_steps
        self.steps_per_epoch = int(steps_per_epoch)
        self.start = start or ResumeState()
        self._metrics_to_restore = None
        if self.start.metrics:
            with np.load(self.backup_dir / self.start.metrics) as f:
                self._metrics_to_restore = [f[k] for k in sorted(
                    (k for k in f.files if k.startswith("v_")),
                    key=lambda k: int(k[2:]))]
        self._epoch = self.start.epoch
        self._step = self.start.step
        self._save_requested = False
        self.saved: ResumeState | None = None

    # -- Keras hooks -------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._step = self.start.step if epoch == self.start.epoch else 0
        if self._metrics_to_restore is not None and self._step:
            variables = self.model.metrics_variables
            if len(variables) == len(self._metrics_to_restore):
                for v, value in zip(variables, self._metrics_to_restore):
                    v.assign(value)
        self._metrics_to_restore = None

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        due = (self.every_steps and self._step % self.every_steps == 0
               and self._step < self.steps_per_epoch)
        if self._save_requested or due:
            self.save(self._epoch, self._step, logs)
        if self._save_requested:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_mid_epoch:
            return  # stopped mid-epoch: that step's state is the one kept
        self.save(epoch + 1, 0, logs)

    # -- API ---------------------------------------------------------------
    def request_save(self) -> None:
        """Save at the end of the current step and stop `fit` (Ctrl-C)."""
        self._save_requested = True

    @property
    def save_requested(self) -> bool:
        """Whether `request_save` was called."""
        return self._save_requested

    @property
    def stopped_mid_epoch(self) -> bool:
        """Whether `request_save` stopped `fit` before its epoch's end."""
        return self._save_requested and self._step < self.steps_per_epoch

    def save(self, epoch: int, step: int, logs: dict | None = None) -> bool:
        """Writes the state "`step` steps into `epoch`"; returns False (and
        writes nothing) when training was stopped for a bad loss or a log
        or weight is not finite."""
        if (self.model.stop_training and not self._save_requested) or not \
                all(math.isfinite(float(v)) for v in (logs or {}).values()
                    if np.ndim(v) == 0) or not _finite_weights(self.model):
            return False
        if step >= self.steps_per_epoch:
            epoch, step = epoch + 1, 0
        if self.saved is not None and (epoch, step) == (self.saved.epoch,
                                                         self.saved.step):
            return True
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        global_step = epoch * self.steps_per_epoch + step
        stem = f"step-{global_step:08d}"
        weights, metrics = f"{stem}.weights.h5", f"{stem}.metrics.npz"
        _build_optimizer(self.model)
        with atomic_write.replacing(self.backup_dir / weights) as tmp:
            self.model.save_weights(tmp)
        with atomic_write.replacing(self.backup_dir / metrics) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{f"v_{i}": np.asarray(v) for i, v in
                               enumerate(self.model.metrics_variables)},
                         **{f"seed_{i}": np.asarray(v) for i, v in
                            enumerate(seed_states(self.model))})
        state = ResumeState(epoch, step, global_step, weights, metrics)
        atomic_write.write_text(self.backup_dir / STATE_NAME,
                                json.dumps(dataclasses.asdict(state)))
        for old in self.backup_dir.glob("step-*"):
            if old.name not in (weights, metrics):
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
        self.saved = state
        return True
