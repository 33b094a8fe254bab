"""FGSM / FGM / BIM / PGD: closed-form references, contract properties and
strength on a CNN trained on real Fashion-MNIST."""

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import attacks
from tests.attacks.linear_model import LinearSoftmax
pgd_module = importlib.import_module("attacks.pgd")

LIN = LinearSoftmax(classes=3, seed=0)
RNG, linear = LIN.rng, LIN
_inputs, _input_grad = LIN.inputs, LIN.input_grad


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_closed_form(targeted):
    x, y = _inputs()
    sign = -1.0 if targeted else 1.0
    want = np.clip(x + 0.07 * sign * np.sign(_input_grad(x, y)), 0, 1)
    got = attacks.fgsm(linear, x, y, eps=0.07, targeted=targeted)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_fgm_matches_closed_form():
    x, y = _inputs()
    g = _input_grad(x, y)
    norms = np.linalg.norm(g.reshape(len(g), -1), axis=1)
    want = np.clip(x + 0.2 * g / norms[:, None, None, None], 0, 1)
    got = attacks.fgm(linear, x, y, eps=0.2)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_fgsm_is_one_step_pgd_and_bim_is_pgd_without_init(norm):
    x, y = _inputs()
    one = attacks.fgsm if norm == "inf" else attacks.fgm
    a = one(linear, x, y, eps=0.1)
    b = attacks.pgd(linear, x, y, eps=0.1, step_size=0.1, steps=1,
                    rand_init=False, norm=norm)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c = attacks.bim(linear, x, y, eps=0.1, step_size=0.02, steps=5,
                    norm=norm)
    d = attacks.pgd(linear, x, y, eps=0.1, step_size=0.02, steps=5,
                    rand_init=False, norm=norm)
    np.testing.assert_array_equal(c.numpy(), d.numpy())


@pytest.mark.parametrize("norm,eps", [("inf", 0.05), ("2", 0.3)])
@pytest.mark.parametrize("name", ["fgsm", "fgm", "bim", "pgd"])
def test_norm_bound_box_dtype_and_no_mutation(name, norm, eps):
    if (name, norm) in (("fgsm", "2"), ("fgm", "inf")):
        pytest.skip("single-norm attack")
    x, y = _inputs()
    x_before = x.copy()
    kwargs = {} if name in ("fgsm", "fgm") else dict(
        step_size=eps / 4, steps=8, norm=norm)
    x_adv = attacks.get_attack(name)(linear, x, y, eps=eps, **kwargs).numpy()
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    np.testing.assert_array_equal(x, x_before)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    d = (x_adv - x).reshape(len(x), -1)
    bound = np.abs(d).max(1) if norm == "inf" else np.linalg.norm(d, axis=1)
    assert bound.max() <= eps + 1e-6
    assert bound.max() > 0.5 * eps  # it moved


def test_float64_input_keeps_dtype_and_eps_zero_is_identity():
    x, y = _inputs()
    x64 = x.astype("float64")
    out = attacks.pgd(linear, x64, y, eps=0.1, step_size=0.05, steps=2)
    assert out.dtype == tf.float64
    same = attacks.pgd(linear, x, y, eps=0.0, step_size=0.05, steps=3)
    np.testing.assert_array_equal(same.numpy(), x)


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm="linf"), r"norm must be one of \('inf', '2'\); got 'linf'"),
    (dict(eps=-0.1), "eps must be a finite number >= 0; got -0.1"),
    (dict(steps=0), "steps must be an integer >= 1; got 0"),
    (dict(step_size=0.0), "step_size must be a number > 0; got 0.0"),
    (dict(restarts=0), "restarts must be an integer >= 1; got 0"),
    (dict(loss="mse"), r"loss must be one of \('ce', 'cw'\); got 'mse'"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    x, y = _inputs()
    args = dict(eps=0.1, step_size=0.01, steps=3, **{})
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        attacks.pgd(linear, x, y, **args)


def test_x_out_of_range_raises():
    x, y = _inputs()
    with pytest.raises(ValueError, match=r"x must lie in \[clip_min"):
        attacks.fgsm(linear, x * 3.0, y, eps=0.1)
    with pytest.raises(KeyError, match="available"):
        attacks.get_attack("pgd_linf")


def test_non_differentiable_model_gets_a_clear_error():
    @tf.autograph.experimental.do_not_convert
    def rounded(x):
        return linear(tf.round(x))

    x, y = _inputs()
    with pytest.raises(ValueError, match="no gradient.*bpda"):
        attacks.pgd(rounded, x, y, eps=0.1, step_size=0.05, steps=2)


def test_no_retracing_across_eps_values():
    x, y = _inputs()
    attacks.pgd(linear, x, y, eps=0.1, step_size=0.01, steps=2)
    before = pgd_module._LOOP.experimental_get_tracing_count()
    for eps in (0.01, 0.02, 0.3):
        attacks.pgd(linear, x, y, eps=eps, step_size=eps / 4, steps=3)
    assert pgd_module._LOOP.experimental_get_tracing_count() == before


def test_from_config_rejects_unknown_keys():
    fn = attacks.from_config({"name": "pgd", "eps": 0.1, "step_size": 0.01,
                              "steps": 2})
    x, y = _inputs()
    assert fn(linear, x, y).shape == x.shape
    with pytest.raises(TypeError, match="stepz"):
        attacks.from_config({"name": "pgd", "eps": 0.1, "stepz": 3})


def test_attack_leaves_batchnorm_statistics_untouched():
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.BatchNormalization()(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    before = [w.numpy().copy() for w in model.non_trainable_weights]
    x = RNG.uniform(size=(8, 4, 4, 1)).astype("float32")
    attacks.pgd(model, x, None, eps=0.1, step_size=0.05, steps=3)
    for a, b in zip(before, model.non_trainable_weights):
        np.testing.assert_array_equal(a, b.numpy())


# --- strength on a naturally trained Fashion-MNIST CNN (session fixture) ---

def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), 1) == y))


def test_pgd_breaks_a_naturally_trained_cnn(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:500], fmnist_test[1][:500]
    clean = _accuracy(model, x, y)
    x_fgsm = attacks.fgsm(model, x, y, eps=0.1)
    x_pgd = attacks.pgd(model, x, y, eps=0.1, step_size=0.01, steps=20,
                        seed=0)
    fgsm_acc, pgd_acc = _accuracy(model, x_fgsm, y), _accuracy(model, x_pgd, y)
    assert clean >= 0.80
    assert pgd_acc <= fgsm_acc <= clean
    assert pgd_acc <= 0.10, (clean, fgsm_acc, pgd_acc)


def test_targeted_pgd_reaches_random_targets(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:200], fmnist_test[1][:200]
    target = (y + RNG.integers(1, 10, size=y.shape)).astype("int32") % 10
    x_adv = attacks.pgd(model, x, target, eps=0.2, step_size=0.01,
                        steps=100, targeted=True, seed=0)
    hit = np.argmax(model.predict(x_adv, verbose=0), 1) == target
    assert hit.mean() >= 0.90, hit.mean()


def test_restarts_never_raise_robust_accuracy(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:300], fmnist_test[1][:300]
    kw = dict(eps=0.03, step_size=0.01, steps=5, seed=3)
    one = attacks.pgd(model, x, y, restarts=1, **kw)
    many = attacks.pgd(model, x, y, restarts=4, **kw)
    ok_one = np.argmax(model.predict(one, verbose=0), 1) == y
    ok_many = np.argmax(model.predict(many, verbose=0), 1) == y
    # Per example: restart 0 is the same run, and the worst case is kept.
    assert not np.any(ok_many & ~ok_one)
    assert ok_many.mean() <= ok_one.mean()
