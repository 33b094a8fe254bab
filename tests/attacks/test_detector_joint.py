"""The detection-system attacks (attacks/detector_joint.py,
attacks/specialists_targeted.py) on tiny linear systems: every success they
report is one the full system really makes (misclassified or on target,
accepted by every detector), they succeed where the defense-unaware C&W
attack is caught, and the members loss gives every needed member the
target with the requested margin."""

import keras
import numpy as np
import pytest

from attacks import cw_l2, detector_joint, specialists_targeted
from attacks.specialists_targeted import random_targets
from models.detection import DetectionSystem

SHAPE = (4, 4, 1)


def _dense_model(weights, bias, name):
    inputs = keras.Input(SHAPE)
    flat = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(weights.shape[1], name=f"{name}_dense")
    out = dense(flat)
    model = keras.Model(inputs, out, name=name)
    dense.set_weights([weights, bias])
    return model


def _system(seed=0, classes=3):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(16, classes)).astype("float32") * 3
    classifier = _dense_model(w, np.zeros(classes, "float32"), "clf")
    # The detector measures the brightness of the top half: a naive attack
    # that brightens it is caught, an adaptive one must avoid doing so.
    d = np.zeros((16, 1), "float32")
    d[:8, 0] = 1.0
    detector = _dense_model(d, np.zeros(1, "float32"), "det")
    system = DetectionSystem("toy", classifier, detector, ["top_half"])
    x_cal = rng.uniform(0.2, 0.8, (200,) + SHAPE).astype("float32")
    system.calibrate(x_cal, fpr=0.05)
    return system, rng


def test_joint_attack_successes_are_real_and_beat_naive():
    system, rng = _system()
    x = rng.uniform(0.3, 0.6, (24,) + SHAPE).astype("float32")
    y = np.argmax(system.logits(x), -1)
    x_adv = detector_joint(system, x, y, steps=60, binary_search_steps=4,
                           learning_rate=0.05, restarts=2)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    labels, rejected, _ = system.predict(x_adv)
    moved = np.any(x_adv != x, axis=(1, 2, 3))
    # Every returned change is a success on the full system.
    assert np.all(labels[moved] != y[moved])
    assert not np.any(rejected[moved])
    joint_rate = np.mean(moved)
    naive = np.asarray(cw_l2(system.classifier, x, y, steps=60,
                             binary_search_steps=4))
    n_labels, n_rejected, _ = system.predict(naive)
    naive_rate = np.mean((n_labels != y) & ~n_rejected)
    assert joint_rate >= 0.9
    assert joint_rate >= naive_rate


def test_joint_attack_refuses_bad_arguments():
    system, rng = _system()
    x = rng.uniform(0.3, 0.6, (2,) + SHAPE).astype("float32")
    with pytest.raises(ValueError, match="steps"):
        detector_joint(system, x, np.zeros(2, "int32"), steps=0)
    system.thresholds = None
    with pytest.raises(ValueError, match="not calibrated"):
        detector_joint(system, x, np.zeros(2, "int32"))


def test_specialists_targeted_members_reach_target_with_margin():
    system, rng = _system(seed=1, classes=3)
    # Members: the generalist (all classes) and a specialist on {0, 1}.
    wg = rng.normal(size=(16, 3)).astype("float32") * 3
    ws = rng.normal(size=(16, 3)).astype("float32") * 3
    members = _dense_model(np.concatenate([wg, ws], 1),
                           np.zeros(6, "float32"), "members_flat")
    members = keras.Model(members.input,
                          keras.layers.Reshape((2, 3))(members.output),
                          name="members")
    class_sets = np.array([[1, 1, 1], [1, 1, 0]], bool)
    system.classifier = _dense_model(wg, np.zeros(3, "float32"), "gen")
    system.components["members"] = members
    system.arrays["class_sets"] = class_sets
    x = rng.uniform(0.3, 0.6, (12,) + SHAPE).astype("float32")
    y = np.argmax(system.logits(x), -1)
    targets = random_targets(y, 3, seed=0)
    assert np.all(targets != y)
    kappa = 2.0
    x_adv = specialists_targeted(system, x, targets, confidence=kappa,
                                 steps=80, binary_search_steps=4)
    moved = np.any(x_adv != x, axis=(1, 2, 3))
    assert np.mean(moved) >= 0.75
    logits = np.asarray(members.predict(x_adv, verbose=0))
    for i in np.flatnonzero(moved):
        t = targets[i]
        for m in np.flatnonzero(class_sets[:, t]):
            z = np.where(class_sets[m], logits[i, m], -np.inf)
            others = np.delete(z, t)
            assert z[t] - others.max() >= kappa - 1e-3
    with pytest.raises(ValueError, match="Specialists"):
        del system.components["members"]
        specialists_targeted(system, x, targets)
