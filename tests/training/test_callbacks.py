"""A NaN stops training and leaves the last good checkpoint and backup."""

import json

import h5py
import keras
import numpy as np

from training.callbacks import build_callbacks


def test_nan_keeps_last_good_checkpoint_and_backup(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(12, 4)).astype("float32")
    x[6:] = np.nan  # epoch 2 (steps 3-5) feeds NaN
    model.fit(x, np.zeros(12, "int32"), batch_size=2, shuffle=False,
              epochs=2, steps_per_epoch=3, verbose=0,
              callbacks=build_callbacks(tmp_path, backup_every_steps=1))
    assert model.stop_training
    good = keras.saving.load_model(tmp_path / "checkpoints" / "last.keras")
    assert all(np.isfinite(w).all() for w in good.get_weights())
    meta = json.loads((tmp_path / "backup" / "training_metadata.json")
                      .read_text())
    assert meta["epoch"] == 1  # the backup of the end of epoch 1
    with h5py.File(tmp_path / "backup" / "latest.weights.h5") as f:
        arrays = []
        f.visititems(lambda _, v: arrays.append(np.asarray(v))
                     if isinstance(v, h5py.Dataset) else None)
    assert arrays and all(np.isfinite(a).all() for a in arrays)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([a.ravel() for a in good.get_weights()])),
        np.sort(np.concatenate([a.ravel() for a in arrays
                                if a.size in (8, 2)])))
