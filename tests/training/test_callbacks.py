"""A bad step stops training and leaves the last good checkpoint and
backup; a diverging (finite but exploding) loss stops it too."""

import json
import math

import keras
import numpy as np

from training import resume
from training.callbacks import build_callbacks


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    return model


def _fit(model, x, tmp_path, max_loss=math.inf):
    callbacks = build_callbacks(tmp_path, backup_every_steps=1,
                                steps_per_epoch=3, max_loss=max_loss)
    model.fit(x, np.zeros(len(x), "int32"), batch_size=2, shuffle=False,
              epochs=2, steps_per_epoch=3, verbose=0, callbacks=callbacks)
    return callbacks[0]


def test_nan_keeps_last_good_checkpoint_and_backup(tmp_path):
    model = _model()
    x = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
    x[6:] = np.nan  # epoch 2 (steps 3-5) feeds NaN
    stop = _fit(model, x, tmp_path)
    assert model.stop_training and stop.diverged[:2] == (1, 0)
    good = keras.saving.load_model(tmp_path / "checkpoints" / "last.keras")
    assert all(np.isfinite(w).all() for w in good.get_weights())
    state = resume.read_state(tmp_path / "backup")
    assert (state.epoch, state.step) == (1, 0)  # the end of epoch 1
    restored = _model()
    resume.restore(restored, tmp_path / "backup", state)
    for a, b in zip(restored.get_weights(), good.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Only the current state's files stay, and no temp file.
    names = sorted(p.name for p in (tmp_path / "backup").iterdir())
    assert names == ["state.json", "step-00000003.metrics.npz",
                     "step-00000003.weights.h5"]
    assert json.loads((tmp_path / "backup" / "state.json").read_text())[
        "global_step"] == 3


def test_an_exploding_finite_loss_stops_at_the_bound(tmp_path):
    model = _model()
    x = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
    x[2:] *= 1e6  # finite, but the loss explodes from step 1 on
    stop = _fit(model, x, tmp_path, max_loss=1e3)
    assert model.stop_training
    epoch, step, loss = stop.diverged
    assert (epoch, step) == (0, 1) and math.isfinite(loss) and loss > 1e3
    assert not (tmp_path / "checkpoints" / "last.keras").exists()
    assert resume.read_state(tmp_path / "backup").global_step == 1


def test_a_keras_backup_of_an_older_run_resumes_at_its_epoch(tmp_path):
    model = _model()
    model.fit(np.zeros((4, 4), "float32"), np.zeros(4, "int32"), verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(
                  str(tmp_path), delete_checkpoint=False)])
    state = resume.read_state(tmp_path, steps_per_epoch=7)
    assert (state.epoch, state.step, state.global_step) == (1, 0, 7)
    restored = _model()
    resume.restore(restored, tmp_path, state)
    for a, b in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resume_trims_the_rows_of_epochs_it_redoes(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,1.5\n1,1.2\n")
    resume.trim_epoch_log(log, resume.ResumeState(epoch=1))
    assert log.read_text() == "epoch,loss\n0,1.5\n"
    resume.trim_epoch_log(log, resume.ResumeState(epoch=3))
    assert log.read_text() == "epoch,loss\n0,1.5\n"
