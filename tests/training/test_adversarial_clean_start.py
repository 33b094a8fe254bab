"""AdversarialTrainer's training attack of Xie et al. 2019 (arXiv
1812.03411): a random wrong target label per example, redrawn every step,
and a clean (not random) start for a fraction `prob_start_from_clean` of
the steps, decided by one scalar draw per step."""

import keras
import numpy as np
import pytest

import attacks
from core import backends
from training.adversarial import TARGETS, AdversarialTrainer
from training.losses import classification_loss

EPS = 16 / 255
XIE = {"name": "pgd", "eps": EPS, "step_size": 1 / 255, "steps": 2,
       "norm": "inf", "rand_init": True, "targeted": True, "restarts": 1,
       "target": "random", "prob_start_from_clean": 0.2}
CLASSES = 10


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Dense(8, activation="relu")(
        keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(h))


def _batch(n=16):
    rng = np.random.default_rng(0)
    return (rng.uniform(0.1, 0.9, (n, 4, 4, 1)).astype("float32"),
            (np.arange(n) % CLASSES).astype("int32"))


def _compiled(method):
    """`method(model, *args)` compiled (tf.function / jax.jit, with the
    trainer's variables, its seed generator included, mapped in), as
    `train_step` runs it."""
    fn = backends.compile_fn(method)
    return lambda model: (lambda *args: fn(model, *args))


_traced_craft = _compiled(lambda m, x, y: m.craft(x, y))
_traced_labels = _compiled(lambda m, y: m.attack_labels(y))


def test_clean_starts_happen_in_about_the_given_fraction_of_steps():
    model = AdversarialTrainer(_net(), attack=XIE)
    craft = _traced_craft(model)
    x, y = _batch(4)
    n = 600
    clean = sum(bool(craft(x, y)[2]) for _ in range(n))
    # Binomial(600, 0.2): sd = 9.8; 5 sd either side.
    assert abs(clean - 0.2 * n) <= 5 * np.sqrt(n * 0.2 * 0.8), clean


def test_a_clean_start_is_pgd_from_x_and_a_random_start_is_not():
    x, y = _batch()
    base = {k: v for k, v in XIE.items() if k != "target"}
    base["targeted"] = False
    always = AdversarialTrainer(_net(), attack={
        **base, "prob_start_from_clean": 1.0, "steps": 1})
    never = AdversarialTrainer(_net(), attack={
        **base, "prob_start_from_clean": 0.0, "steps": 1})
    x_clean, _, from_clean = _traced_craft(always)(x, y)
    assert bool(from_clean)
    bim = attacks.pgd(always.net, x, y, eps=EPS, step_size=1 / 255, steps=1,
                      rand_init=False)
    np.testing.assert_allclose(x_clean, bim, atol=1e-6)
    craft = _traced_craft(never)
    first, _, from_clean = craft(x, y)
    assert not bool(from_clean)
    assert not np.allclose(first, craft(x, y)[0])  # a new random start
    assert not np.allclose(first, bim)


def test_random_targets_are_wrong_uniform_and_redrawn_every_step():
    model = AdversarialTrainer(_net(), attack=XIE)
    labels = _traced_labels(model)
    numpy = np.asarray
    y = np.full(2000, 3, "int32")
    first = numpy(labels(y))
    assert not np.array_equal(first, numpy(labels(y)))
    targets = np.concatenate([first] + [numpy(labels(y))
                                        for _ in range(4)])
    assert not np.any(targets == 3)
    counts = np.bincount(targets, minlength=CLASSES)
    assert set(np.flatnonzero(counts)) == set(range(CLASSES)) - {3}
    expected = len(targets) / (CLASSES - 1)
    chi2 = ((counts[counts > 0] - expected) ** 2 / expected).sum()
    assert chi2 < 30  # chi-square, 8 dof: P(> 30) ~ 2e-4
    mixed = np.arange(1000) % CLASSES
    assert not np.any(numpy(labels(mixed)) == mixed)


def test_adversarial_examples_stay_in_the_ball_and_approach_the_target():
    x, y = _batch(64)
    attack = {**XIE, "steps": 10, "prob_start_from_clean": 0.5}
    model = AdversarialTrainer(_net(), attack=attack)
    x_adv, target, _ = _traced_craft(model)(x, y)
    assert np.abs(x_adv - x).max() <= EPS + 1e-6
    assert 0.0 <= np.min(x_adv) and np.max(x_adv) <= 1.0
    ce = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None)
    before = np.asarray(ce(target, model.net(x)))
    after = np.asarray(ce(target, model.net(x_adv)))
    assert np.mean(after < before) > 0.9  # targeted: descends the loss


def test_training_steps_run_under_fit_and_the_config_round_trips(tmp_path):
    x, y = _batch(32)
    model = AdversarialTrainer(_net(), attack=XIE)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=classification_loss(0.1))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.attack == XIE


def test_without_the_new_keys_the_attack_is_unchanged():
    x, y = _batch()
    plain = {"name": "pgd", "eps": 0.1, "step_size": 0.05, "steps": 2,
             "rand_init": False}
    model = AdversarialTrainer(_net(), attack=plain)
    x_adv, labels, from_clean = model.craft(x, y)
    assert labels is y and not bool(from_clean)
    np.testing.assert_allclose(
        x_adv, attacks.pgd(model.net, x, y, eps=0.1, step_size=0.05,
                           steps=2, rand_init=False), atol=1e-6)


@pytest.mark.parametrize("change, match", [
    ({"target": "rnd"}, r"target must be one of \('label', 'random'\); "
                        r"got 'rnd'"),
    ({"targeted": False}, r"target='random' needs targeted=True; got "
                          r"targeted=False"),
    ({"prob_start_from_clean": 1.5}, r"prob_start_from_clean must be in "
                                     r"\[0, 1\]; got 1.5"),
    ({"rand_init": False}, r"prob_start_from_clean needs rand_init=True; "
                           r"got rand_init=False"),
])
def test_bad_training_attack_settings_raise(change, match):
    assert TARGETS == ("label", "random")
    with pytest.raises(ValueError, match=match):
        AdversarialTrainer(_net(), attack={**XIE, **change})
