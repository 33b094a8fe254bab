"""The Keras callbacks of a training run, laid out in its workdir:

    <workdir>/backup/         BackupAndRestore state (a killed run resumes)
    <workdir>/checkpoints/last.keras   last finite epoch's full model
    <workdir>/tensorboard/    TensorBoard logs
    <workdir>/log.csv         one row per epoch (appended on resume)

A step with a NaN/inf loss stops training (`TerminateOnNaN`), and a state
whose logs or weights are not finite is never written to `checkpoints/` or
`backup/`, so both keep the last good state.
"""

from __future__ import annotations

import importlib.util
import pathlib

import keras
import numpy as np
from absl import logging

from core.keras_internals import GuardedBackupAndRestore


def _weights_finite(model) -> bool:
    return all(np.isfinite(w).all() for w in model.get_weights())


class _FiniteCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that skips an epoch ended by a NaN or whose weights
    are not finite."""

    def on_epoch_end(self, epoch, logs=None):
        if not self.model.stop_training and _weights_finite(self.model):
            super().on_epoch_end(epoch, logs)


class _FiniteBackup(GuardedBackupAndRestore):
    """BackupAndRestore that never writes non-finite weights (a step's
    logged loss is computed before its update, so the weights themselves
    are checked, and only when a backup is due), and that also backs up at
    every epoch end when it backs up every N steps, so a run killed between
    epochs resumes at the next one (the hooks of `GuardedBackupAndRestore`;
    tests/training/test_callbacks.py checks the behaviour)."""

    def may_save(self):
        return not self.model.stop_training and _weights_finite(self.model)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            self.save_now()


def build_callbacks(workdir: pathlib.Path, backup_every_steps: int | None
                    ) -> list[keras.callbacks.Callback]:
    """Callbacks for `fit()`: NaN stop, backup, checkpoint, CSV, TensorBoard.

    Args:
        workdir: the run's directory (this worker's, under multi-worker).
        backup_every_steps: back up every N steps as well as every epoch;
            None backs up at epoch ends only.
    """
    workdir = pathlib.Path(workdir)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        _FiniteBackup(str(workdir / "backup"),
                      save_freq=backup_every_steps or "epoch",
                      double_checkpoint=True, delete_checkpoint=False),
        _FiniteCheckpoint(str(workdir / "checkpoints" / "last.keras")),
        keras.callbacks.CSVLogger(str(workdir / "log.csv"), append=True),
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
