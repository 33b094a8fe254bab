"""Detection metrics (evaluation/detection.py) against hand-computed
values on a system whose scores and labels are known exactly."""

import keras
import numpy as np
import pytest

from evaluation import detection
from models.detection import DetectionSystem

SHAPE = (1, 1, 2)


def _system():
    """Pixel 0 decides the class (logits [p0, 0.5]); pixel 1 is the score;
    threshold 0.5, scale 1."""
    inputs = keras.Input(SHAPE)
    flat = keras.layers.Flatten()(inputs)
    logits = keras.layers.Dense(2, name="c")(flat)
    clf = keras.Model(inputs, logits)
    clf.get_layer("c").set_weights([np.array([[1, 0], [0, 0]], "float32"),
                                    np.array([0, 0.5], "float32")])
    score = keras.layers.Dense(1, name="s")(flat)
    det = keras.Model(inputs, score)
    det.get_layer("s").set_weights([np.array([[0], [1]], "float32"),
                                    np.zeros(1, "float32")])
    return DetectionSystem("toy", clf, det, ["s"], thresholds=[0.5],
                           scales=[1.0])


def _x(p0, p1):
    return np.stack([p0, p1], -1).reshape(-1, *SHAPE).astype("float32")


def test_metrics_hand_computed():
    system = _system()
    # labels: class 0 iff p0 > 0.5; rejected iff p1 > 0.5.
    x = _x([0.9, 0.9, 0.9, 0.9, 0.1], [0.1, 0.1, 0.1, 0.9, 0.1])
    y = np.array([0, 0, 0, 0, 0])
    clean = detection.clean_metrics(system, x, y)
    assert clean["clean_accuracy"] == pytest.approx(0.8)
    assert clean["false_positive_rate"] == pytest.approx(0.2)
    assert clean["clean_accuracy_accepted"] == pytest.approx(0.6)
    # Seeds: examples 0-2 (correct and accepted). Example 0 fooled and
    # accepted, 1 fooled and detected, 2 not fooled.
    x_adv = _x([0.2, 0.2, 0.8, 0.9, 0.1], [0.1, 0.8, 0.1, 0.9, 0.1])
    res = detection.detection_metrics(system, x, y, x_adv, clean)
    assert res["num_seeds"] == 3
    assert res["misclassified_rate"] == pytest.approx(2 / 3)
    assert res["detection_rate"] == pytest.approx(1 / 2)
    assert res["success_rate"] == pytest.approx(1 / 3)
    assert res["l2"]["mean"] == pytest.approx(0.7)
    assert res["linf"]["median"] == pytest.approx(0.7)
    # Joint AUC: clean scores (s - 0.5) = [-.4, -.4, -.4, .4, -.4] vs the
    # fooled examples' [-.4, .3]: P(adv > clean) + ties / 2.
    pairs = [(a > c) + 0.5 * (a == c) for a in (-0.4, 0.3)
             for c in (-0.4, -0.4, -0.4, 0.4, -0.4)]
    assert res["roc_auc"]["joint"] == pytest.approx(np.mean(pairs), abs=1e-6)
    assert detection.success_vs_distortion(res, [0.5, 0.7]) == \
        pytest.approx([0.0, 1 / 3])
    assert "success" not in detection.to_json(res)


def test_plots_are_written_once(tmp_path):
    system = _system()
    x = _x([0.9] * 4, [0.1, 0.2, 0.3, 0.9])
    y = np.zeros(4, int)
    clean = detection.clean_metrics(system, x, y)
    res = detection.detection_metrics(
        system, x, y, _x([0.1] * 4, [0.1, 0.7, 0.3, 0.9]), clean)
    roc = detection.plot_roc(system, clean, {"a": res}, tmp_path / "r.png")
    curve = detection.plot_success_vs_distortion({"a": res},
                                                 tmp_path / "c.png")
    assert roc.stat().st_size > 1000 and curve.stat().st_size > 1000
    with pytest.raises(FileExistsError):
        detection.plot_roc(system, clean, {"a": res}, tmp_path / "r.png")
