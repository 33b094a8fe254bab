"""AdversarialTrainer: the mixed loss of Goodfellow et al. 2015 (Eq. 6),
serialization, and clear errors."""

import keras
import numpy as np
import pytest

import attacks
from core import backends
from training.adversarial import AdversarialTrainer
from training.losses import classification_loss

ATTACK = {"name": "pgd", "eps": 0.1, "step_size": 0.05, "steps": 2,
          "rand_init": False}


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Dense(8, activation="relu")(
        keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))


def _batch():
    rng = np.random.default_rng(0)
    return (rng.uniform(size=(16, 4, 4, 1)).astype("float32"),
            (np.arange(16) % 3).astype("int32"))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_step_follows_the_mixed_loss(alpha):
    """One SGD step of the trainer equals one step on the loss
    alpha * CE(x) + (1 - alpha) * CE(x_adv) computed by hand."""
    x, y = _batch()
    model = AdversarialTrainer(_net(), attack=ATTACK, alpha=alpha)
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=classification_loss())
    reference = _net()
    x_adv = attacks.pgd(reference, x, y, **{k: v for k, v in ATTACK.items()
                                            if k != "name"})
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss, _, grads, _ = backends.gradients(
        lambda: (alpha * ce(y, reference(x)) + (1 - alpha) * ce(
            y, reference(x_adv)), ()), reference.trainable_variables)
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], float(loss), rtol=1e-5)
    for v, g, w in zip(reference.trainable_variables, grads,
                       model.net.trainable_variables):
        np.testing.assert_allclose(np.asarray(w), np.asarray(v) - 0.5 *
                                   np.asarray(g), atol=1e-6)


def test_round_trip_through_keras_file(tmp_path):
    model = AdversarialTrainer(_net(), attack=ATTACK, alpha=0.5)
    x, _ = _batch()
    path = tmp_path / "trainer.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, AdversarialTrainer)
    assert loaded.attack == ATTACK and loaded.alpha == 0.5
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_label_smoothing_loss_matches_formula():
    logits = np.array([[2.0, 0.0, -1.0]], "float32")
    y = np.array([0])
    eps = 0.1
    soft = np.full(3, eps / 3) + np.eye(3)[0] * (1 - eps)
    logp = logits[0] - np.log(np.exp(logits[0]).sum())
    got = float(classification_loss(eps)(y, logits))
    np.testing.assert_allclose(got, -(soft * logp).sum(), rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha must be in"):
        AdversarialTrainer(_net(), attack=ATTACK, alpha=1.5)
    with pytest.raises(KeyError, match="available"):
        AdversarialTrainer(_net(), attack={"name": "pgdd", "eps": 0.1})
    with pytest.raises(ValueError, match="label_smoothing"):
        classification_loss(1.0)
