"""The Keras callbacks of a training run, laid out in its workdir:

    <workdir>/backup/         the resume state (`training.resume.Backup`)
    <workdir>/checkpoints/last.keras   last finite epoch's full model
    <workdir>/tensorboard/    TensorBoard logs
    <workdir>/log.csv         one row per epoch (appended on resume)

`DivergenceStop` stops training at the first step whose loss is not
finite or exceeds `max_loss` (a loss of 6e29 is finite, so Keras's
`TerminateOnNaN` misses a run that has blown up); a state whose logs or
weights are not finite is never written to `checkpoints/` or `backup/`, so
both keep the last good state. Every file is written atomically
(`core.atomic_write`).
"""

from __future__ import annotations

import importlib.util
import math
import pathlib

import keras
import numpy as np
from absl import logging

from core import atomic_write
from training.resume import Backup, ResumeState


def weights_finite(model: keras.Model) -> bool:
    """Whether every weight of `model` (optimizer slots excluded) is
    finite."""
    return all(np.isfinite(w).all() for w in model.get_weights())


class DivergenceStop(keras.callbacks.Callback):
    """Stops `fit` at the first step whose loss is NaN, infinite or above
    `max_loss`, and records where (`diverged`: `(epoch, step, loss)`)."""

    def __init__(self, max_loss: float = math.inf):
        super().__init__()
        self.max_loss = float(max_loss)
        self.diverged: tuple[int, int, float] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if not math.isfinite(loss) or loss > self.max_loss:
            self.diverged = (self._epoch, int(batch), loss)
            self.model.stop_training = True


class FiniteCheckpoint(keras.callbacks.Callback):
    """Saves the full model to `path` at every epoch end, atomically, unless
    training was stopped or a weight or log is not finite."""

    def __init__(self, path: str | pathlib.Path):
        super().__init__()
        self.path = pathlib.Path(path)

    def on_epoch_end(self, epoch, logs=None):
        logs_finite = all(math.isfinite(float(v)) for v in
                          (logs or {}).values() if np.ndim(v) == 0)
        if self.model.stop_training or not logs_finite or not \
                weights_finite(self.model):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write.replacing(self.path) as tmp:
            self.model.save(tmp)


class EpochLog(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` (appending) that writes no row for an
    epoch that `backup` stopped midway (Ctrl-C): the resumed run writes
    that epoch's row once it ends."""

    def __init__(self, filename: str | pathlib.Path, backup: Backup):
        super().__init__(str(filename), append=True)
        self.backup = backup

    def on_epoch_end(self, epoch, logs=None):
        if not self.backup.stopped_mid_epoch:
            super().on_epoch_end(epoch, logs)


def build_callbacks(workdir: pathlib.Path, backup_every_steps: int | None,
                    steps_per_epoch: int, start: ResumeState | None = None,
                    max_loss: float = math.inf
                    ) -> list[keras.callbacks.Callback]:
    """Callbacks for `fit()`: divergence stop, checkpoint, CSV, backup,
    TensorBoard (in that order: a diverged step is never backed up, and an
    epoch's end is committed by its backup after its row is logged).

    Args:
        workdir: the run's directory (this worker's, under multi-worker).
        backup_every_steps: back up every N steps as well as every epoch;
            None backs up at epoch ends only.
        steps_per_epoch: steps of a full epoch.
        start: the state this `fit` resumes from (None: a new run).
        max_loss: a larger training loss stops the run as diverged.
    """
    workdir = pathlib.Path(workdir)
    backup = Backup(workdir / "backup", backup_every_steps,
                    steps_per_epoch, start)
    # The backup, the commit point of an epoch's end, comes last: a run
    # killed before it redoes that epoch's end (train.py trims the log).
    callbacks = [
        DivergenceStop(max_loss),
        FiniteCheckpoint(workdir / "checkpoints" / "last.keras"),
        EpochLog(workdir / "log.csv", backup), backup,
    ]
    if _tensorflow_installed():  # Keras writes TensorBoard logs with tf
        callbacks.append(keras.callbacks.TensorBoard(
            str(workdir / "tensorboard"), update_freq="epoch"))
    else:
        logging.info("TensorFlow is not installed: no TensorBoard logs "
                     "(log.csv has the same scalars)")
    return callbacks


def _tensorflow_installed() -> bool:
    """True where `import tensorflow` would find the package (Keras's
    TensorBoard callback writes its summaries with it, on every backend)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ImportError:
        return False
