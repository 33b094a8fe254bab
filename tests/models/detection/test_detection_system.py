"""DetectionSystem (models/detection/detection_system.py): threshold
calibration at a false-positive rate, the rejection rule, save / load
round trip, and the refusals (non-finite state, overwrite, uncalibrated)."""

import json

import keras
import numpy as np
import pytest

from core.errors import UserError
from models.detection import DetectionSystem, is_system_dir, load_system

SHAPE = (4, 4, 1)


def _dense(units, seed, name):
    inputs = keras.Input(SHAPE)
    out = keras.layers.Dense(
        units, kernel_initializer=keras.initializers.RandomNormal(seed=seed),
        name=f"{name}_d")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, out, name=name)


def _system():
    return DetectionSystem("toy", _dense(3, 0, "clf"), _dense(2, 1, "det"),
                           ["a", "b"], config={"paper": "none"})


def test_calibration_reaches_the_fpr_and_rejection_rule():
    system = _system()
    x = np.random.default_rng(0).uniform(0, 1, (1000,) + SHAPE)
    x = x.astype("float32")
    achieved = system.calibrate(x, fpr=0.1)
    scores = system.scores(x)
    rejected = np.any(scores > system.thresholds, axis=1)
    assert achieved == pytest.approx(np.mean(rejected))
    assert 0.09 <= achieved <= 0.1
    # Both detectors share the same per-detector quantile.
    per = np.mean(scores > system.thresholds, axis=0)
    assert abs(per[0] - per[1]) <= 0.005
    # Hand-made scores: rejected iff any column is above its threshold.
    t = system.thresholds
    s = np.array([[t[0] - 1, t[1] - 1], [t[0] + 1, t[1] - 1],
                  [t[0], t[1]], [t[0] - 1, t[1] + 1e-3]])
    assert system.rejected(s).tolist() == [False, True, False, True]
    assert np.all(system.scales > 0)


def test_save_load_round_trip_and_no_overwrite(tmp_path):
    system = _system()
    x = np.random.default_rng(1).uniform(0, 1, (100,) + SHAPE)
    x = x.astype("float32")
    system.calibrate(x)
    system.components["extra"] = _dense(3, 2, "extra")
    system.arrays["table"] = np.eye(3, dtype=bool)
    system.save(tmp_path / "sys")
    assert is_system_dir(tmp_path / "sys")
    back = load_system(tmp_path / "sys")
    assert back.kind == "toy" and back.names == ["a", "b"]
    np.testing.assert_array_equal(back.thresholds, system.thresholds)
    np.testing.assert_allclose(back.scores(x), system.scores(x), rtol=1e-6)
    np.testing.assert_array_equal(back.arrays["table"], np.eye(3, dtype=bool))
    assert set(back.components) == {"extra"}
    assert back.config["paper"] == "none"
    before = (tmp_path / "sys" / "system.json").read_text()
    with pytest.raises(FileExistsError):
        system.save(tmp_path / "sys")
    assert (tmp_path / "sys" / "system.json").read_text() == before


def test_refusals(tmp_path):
    system = _system()
    x = np.random.default_rng(2).uniform(0, 1, (50,) + SHAPE)
    x = x.astype("float32")
    with pytest.raises(ValueError, match="calibrate"):
        system.save(tmp_path / "a")
    with pytest.raises(ValueError, match="no thresholds"):
        system.rejected(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="fpr must be in"):
        system.calibrate(x, fpr=1.5)
    with pytest.raises(ValueError, match="at least 20"):
        system.calibrate(x[:5])
    system.calibrate(x)
    w = system.detector.weights[0]
    w.assign(np.full(w.shape, np.nan, "float32"))
    with pytest.raises(ValueError, match="non-finite"):
        system.save(tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="one value per detector"):
        DetectionSystem("toy", system.classifier, system.detector, ["a"],
                        thresholds=[1.0, 2.0])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "system.json").write_text("{not json")
    with pytest.raises(UserError, match="not a detection system"):
        load_system(tmp_path / "c")
    (tmp_path / "c" / "system.json").write_text(json.dumps(
        {"kind": "x", "names": ["a"], "components": []}))
    with pytest.raises(UserError, match="could not be loaded"):
        load_system(tmp_path / "c")
