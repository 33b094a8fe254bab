"""Defensive distillation: the temperature loss against a numpy reference,
the student's targets are the teacher's softmax at T, and train.py runs both
stages from one command (resuming reuses a finished teacher)."""

import keras
import numpy as np
import pytest

from training.distillation import DistillationTrainer, SoftTargetCrossentropy


def _log_softmax(z):
    z = z.astype("float64") - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _softmax(z):
    return np.exp(_log_softmax(z))


@pytest.mark.parametrize("temperature", [1.0, 100.0])
def test_soft_target_loss_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 4)).astype("float32") * 50
    p = _softmax(rng.normal(size=(5, 4)))
    want = -(p * _log_softmax(z / temperature)).sum(-1).mean()
    got = SoftTargetCrossentropy(temperature)(p.astype("float32"), z)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # integer labels are one-hot
    y = np.array([0, 1, 2, 3, 0])
    want_hard = -_log_softmax(z / temperature)[np.arange(5), y].mean()
    np.testing.assert_allclose(
        float(SoftTargetCrossentropy(temperature)(y, z)), want_hard,
        rtol=1e-5)


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        SoftTargetCrossentropy(0.0)
    with pytest.raises(ValueError, match="temperature"):
        DistillationTrainer(keras.Sequential([keras.layers.Dense(2)]), -1.0)


def _net(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(3)])


def test_student_step_uses_teacher_soft_labels():
    """The loss the student step reports equals CE(softmax(teacher/T),
    softmax(student/T)) computed by hand before the update."""
    t = 10.0
    teacher, student = _net(1), _net(2)
    x = np.random.default_rng(0).uniform(size=(8, 2, 2, 1)).astype("float32")
    y = np.arange(8) % 3
    model = DistillationTrainer(student, t, teacher)
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss=SoftTargetCrossentropy(t))
    want = -(_softmax(np.asarray(teacher(x)) / t)
             * _log_softmax(np.asarray(student(x)) / t)).sum(-1).mean()
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-4)
    assert not teacher.trainable


def test_teacher_stage_and_validation_use_one_hot_labels():
    """Teacher stage (no teacher): the step's loss is CE(one-hot(y),
    softmax(z / T)) before the update; validation is the same on the
    updated weights, and its accuracy the usual one."""
    t = 10.0
    net = _net(3)
    x = np.random.default_rng(1).uniform(size=(8, 2, 2, 1)).astype("float32")
    y = np.arange(8) % 3
    model = DistillationTrainer(net, t)
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=SoftTargetCrossentropy(t),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    want = -_log_softmax(np.asarray(net(x)) / t)[np.arange(8), y].mean()
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)
    z = np.asarray(net(x))
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        logs["loss"], -_log_softmax(z / t)[np.arange(8), y].mean(),
        rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"], np.mean(z.argmax(-1) == y))


def test_two_stages_from_one_command(tmp_path):
    from tests.train_utils import run_train

    work = tmp_path / "d"
    run_train(work, "distillation_cnn_fmnist:smoke")
    assert (work / "teacher" / "model.keras").exists()
    assert (work / "model.keras").exists()
    student = keras.saving.load_model(work / "model.keras")
    teacher = keras.saving.load_model(work / "teacher" / "model.keras")
    x = np.zeros((1, 28, 28, 1), "float32")
    assert not np.allclose(student(x), teacher(x))
