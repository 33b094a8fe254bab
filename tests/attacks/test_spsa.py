"""SPSA (Uesato et al. 2018, arXiv 1802.05666, Alg. 1): the gradient
estimate against the analytic gradient, contract properties, query
accounting, gradient-free operation, and strength on a CNN trained on real
Fashion-MNIST."""

import importlib
import time

import keras
import numpy as np
import pytest
from keras import ops

from attacks.pgd import pgd
from attacks.spsa import spsa, spsa_gradient
from tests.attacks.linear_model import LinearSoftmax
from tests.attacks.query_counting import tf_counting

spsa_module = importlib.import_module("attacks.spsa")

LIN = LinearSoftmax(classes=5, seed=0)
linear = LIN
FAST = dict(steps=20, samples=16, step_size=0.05)


def _inputs(n=8):
    """Interior inputs (in [0.05, 0.95]) labelled by the model itself."""
    x, _ = LIN.inputs(n)
    return x, np.argmax(np.asarray(LIN(x)), 1).astype("int32")


def _bound(x_adv, x, norm):
    d = (np.asarray(x_adv, np.float64) - x).reshape(len(x), -1)
    return np.abs(d).max(1) if norm == "inf" else np.linalg.norm(d, axis=1)


def _fooled(model, x_adv, y):
    return np.argmax(np.asarray(model(x_adv)), 1) != y


def _cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b,
                                                                        axis=1)


def test_gradient_estimate_matches_the_analytic_gradient():
    x, y = _inputs(16)
    exact = LIN.input_grad(x, y)  # d CE / dx
    many = spsa_gradient(linear, x, y, loss="ce", samples=4096, seed=0)
    few = spsa_gradient(linear, x, y, loss="ce", samples=64, seed=0)
    cos_many = _cosine(np.asarray(many), exact)
    cos_few = _cosine(np.asarray(few), exact)
    print(f"\ncosine to the analytic gradient: 4096 samples min "
          f"{cos_many.min():.4f}, 64 samples mean {cos_few.mean():.3f}")
    assert cos_many.min() > 0.98  # measured 0.995
    assert cos_few.mean() > 0.6 and cos_few.mean() < cos_many.mean()
    # Unbiased scale: E[v v^T] = I, so the estimate tends to the gradient.
    np.testing.assert_allclose(np.linalg.norm(np.asarray(many)),
                               np.linalg.norm(exact), rtol=0.05)
    # Targeted: the gradient of -CE(target); margin: the CW logit margin.
    tgt = spsa_gradient(linear, x, y, loss="ce", samples=4096, seed=0,
                        targeted=True)
    np.testing.assert_allclose(np.asarray(tgt), -np.asarray(many), atol=1e-5)
    z = np.asarray(LIN(x))
    other = np.where(np.eye(5)[y] > 0, -np.inf, z).argmax(1)
    margin = (LIN.W[:, other] - LIN.W[:, y]).T.reshape(x.shape)
    cw = spsa_gradient(linear, x, y, loss="cw", samples=4096, seed=1)
    cos_cw = _cosine(np.asarray(cw), margin)  # a kink may lie within delta
    assert cos_cw.mean() > 0.98 and cos_cw.min() > 0.9
    # Chunked model calls give the same estimate (same draws per chunk).
    small = spsa_gradient(linear, x, y, loss="ce", samples=64, seed=0,
                          max_batch=16 * 64)
    np.testing.assert_allclose(np.asarray(small), np.asarray(few), atol=1e-6)


@pytest.mark.parametrize("norm,eps", [("inf", 0.2), ("2", 0.5)])
def test_norm_bound_box_dtype_and_no_mutation(norm, eps):
    x, y = _inputs()
    x_before = x.copy()
    x_adv = np.asarray(spsa(linear, x, y, eps=eps, norm=norm, rand_init=True,
                            seed=0, **FAST))
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    np.testing.assert_array_equal(x, x_before)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert _bound(x_adv, x, norm).max() <= eps + 1e-6
    assert _bound(x_adv, x, norm).max() > 0.5 * eps  # it moved
    x64 = x.astype("float64")
    out = spsa(linear, x64, y, eps=eps, norm=norm, seed=0, **FAST)
    # float64 (JAX without x64 holds x64 as float32: x's dtype there)
    assert keras.backend.standardize_dtype(out.dtype) == \
        keras.backend.standardize_dtype(ops.convert_to_tensor(x64).dtype)
    if keras.backend.backend() == "tensorflow":
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
    assert _bound(np.asarray(out), x64, norm).max() <= eps + 1e-6
    assert np.asarray(out).min() >= 0.0 and np.asarray(out).max() <= 1.0


def test_box_holds_near_its_faces():
    x = np.zeros((4, 3, 3, 1), np.float32)
    x[:, :, :1] = 1.0
    w = np.random.default_rng([1, 1]).normal(size=(9, 3)).astype("float32")

    def model(v):
        return ops.matmul(ops.reshape(v, (-1, 9)), w)

    out = spsa(model, x, None, eps=0.5, seed=1, early_stop=False, **FAST)
    assert np.asarray(out).min() >= 0.0 and np.asarray(out).max() <= 1.0
    assert _bound(np.asarray(out), x, "inf").max() <= 0.5 + 1e-6


def test_eps_zero_is_identity_and_seed_reproducible():
    x, y = _inputs()
    same = spsa(linear, x, y, eps=0.0, seed=0, **FAST)
    np.testing.assert_array_equal(np.asarray(same), x)
    a = spsa(linear, x, y, eps=0.1, seed=5, **FAST)
    b = spsa(linear, x, y, eps=0.1, seed=5, **FAST)
    c = spsa(linear, x, y, eps=0.1, seed=6, **FAST)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm="linf"), r"norm must be one of \('inf', '2'\); got 'linf'"),
    (dict(eps=-0.1), "eps must be a finite number >= 0; got -0.1"),
    (dict(steps=0), "steps must be an integer >= 1; got 0"),
    (dict(step_size=0.0), "step_size must be a number > 0; got 0.0"),
    (dict(samples=127), r"samples must be an even integer >= 2 "
                        r"\(antithetic pairs\); got 127"),
    (dict(samples=0), "samples must be an even integer >= 2.*got 0"),
    (dict(delta=0.0), "delta must be a number > 0; got 0.0"),
    (dict(loss="margin"), r"loss must be one of \('ce', 'cw'\); got"),
    (dict(max_batch=0), "max_batch must be an integer >= 1; got 0"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    x, y = _inputs()
    args = dict(eps=0.1, steps=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        spsa(linear, x, y, **args)


def test_x_outside_box_targeted_without_y_and_registered():
    x, y = _inputs()
    with pytest.raises(ValueError, match=r"x must lie in \[clip_min"):
        spsa(linear, x * 3.0, y, eps=0.1)
    with pytest.raises(ValueError, match="needs the target labels"):
        spsa(linear, x, None, eps=0.1, targeted=True)
    with pytest.raises(ValueError, match="samples must be an even"):
        spsa_gradient(linear, x, y, samples=3)
    from attacks._registry import ATTACKS
    assert ATTACKS.get("spsa") is spsa


def _constant(x):
    """Logits independent of x: argmax is always class 2."""
    return ops.tile(ops.convert_to_tensor([[0.0, 1.0, 3.0]]),
                    (ops.shape(x)[0], 1))


@pytest.mark.tensorflow_only
def test_queries_per_step_and_early_stop():
    x, _ = _inputs(6)
    model = tf_counting(_constant)
    kw = dict(eps=0.1, steps=4, samples=8, seed=0)
    # Hopeless (label 2 is always predicted): samples + 1 per step.
    spsa(model, x, np.full(6, 2, np.int32), **kw)
    assert int(model.images.numpy()) == 6 * 4 * (8 + 1)
    # Adversarial from the first iterate on: one step, then stop.
    model.images.assign(0)
    spsa(model, x, np.zeros(6, np.int32), **kw)
    assert int(model.images.numpy()) == 6 * (8 + 1)
    model.images.assign(0)
    spsa(model, x, np.zeros(6, np.int32), early_stop=False, **kw)
    assert int(model.images.numpy()) == 6 * 4 * (8 + 1)
    # Chunked: at most max_batch perturbed images per call, same total.
    model.images.assign(0)
    spsa(model, x, np.full(6, 2, np.int32), max_batch=24, **kw)
    assert int(model.images.numpy()) == 6 * 4 * (8 + 1)


def _stopped(x):
    """The linear model with its output behind stop_gradient: no
    gradient reaches x, so PGD cannot run."""
    return ops.stop_gradient(linear(x))


@pytest.mark.tensorflow_only
def test_model_is_never_differentiated():
    import tensorflow as tf

    @tf.custom_gradient
    def no_gradient(v):
        def grad(dy):
            raise AssertionError("the attack differentiated the model")
        return tf.identity(v), grad

    @tf.autograph.experimental.do_not_convert
    def guarded(v):
        """The linear model behind an identity whose gradient raises."""
        return linear(no_gradient(v))

    x, y = _inputs(16)
    with pytest.raises(AssertionError, match="differentiated"):
        pgd(guarded, x, y, eps=0.2, step_size=0.05, steps=2)
    plain = _fooled(linear, spsa(linear, x, y, eps=0.2, seed=0, **FAST), y)
    shielded = _fooled(linear, spsa(guarded, x, y, eps=0.2, seed=0,
                                    **FAST), y)
    np.testing.assert_array_equal(shielded, plain)  # same queries, same run
    with pytest.raises(ValueError, match="no gradient"):
        pgd(_stopped, x, y, eps=0.2, step_size=0.05, steps=2)


def test_stop_gradient_does_not_stop_it():
    x, y = _inputs(16)
    plain = _fooled(linear, spsa(linear, x, y, eps=0.2, seed=0, **FAST), y)
    stopped = _fooled(linear, spsa(_stopped, x, y, eps=0.2, seed=0, **FAST),
                      y)
    print(f"\nspsa on linear: {plain.mean():.2f}; behind stop_gradient: "
          f"{stopped.mean():.2f}")
    assert plain.mean() >= 0.6
    np.testing.assert_array_equal(stopped, plain)


def test_targeted_reaches_targets_on_the_linear_model():
    x, y = _inputs(16)
    target = ((y + 1) % 5).astype("int32")
    out = spsa(linear, x, target, eps=0.4, targeted=True, seed=0, **FAST)
    hit = np.argmax(np.asarray(linear(out)), 1) == target
    print(f"\ntargeted spsa hit rate {hit.mean():.2f}")
    assert hit.mean() >= 0.75


@pytest.mark.tensorflow_only
def test_no_retracing_across_eps_values():
    x, y = _inputs()
    spsa(linear, x, y, eps=0.1, steps=2, samples=4, seed=0)
    before = spsa_module._LOOP.experimental_get_tracing_count()
    for eps in (0.01, 0.02, 0.3):
        spsa(linear, x, y, eps=eps, steps=2, samples=4, seed=0)
    assert spsa_module._LOOP.experimental_get_tracing_count() == before


# --- strength on a naturally trained Fashion-MNIST CNN (session fixture) ---

def test_spsa_breaks_the_fmnist_cnn(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:100], fmnist_test[1][:100]
    keep = np.argmax(np.asarray(model(x, training=False)), 1) == y
    x, y = x[keep][:30], y[keep][:30]
    noise = np.clip(x + 0.1 * np.sign(np.random.default_rng(0).normal(
        size=x.shape)), 0, 1).astype("float32")
    start = time.time()
    x_adv = spsa(model, x, y, eps=0.1, steps=30, samples=32, step_size=0.02,
                 seed=0)
    seconds = time.time() - start
    pred = np.argmax(np.asarray(model(x_adv, training=False)), 1)
    rate = (pred != y).mean()
    base = (np.argmax(np.asarray(model(noise, training=False)), 1)
            != y).mean()
    print(f"\nspsa L-inf eps=0.1, 30 steps x 33 queries, {len(x)} images: "
          f"success {rate:.2f} (random +-eps: {base:.2f}) in {seconds:.1f}s")
    assert _bound(np.asarray(x_adv), x, "inf").max() <= 0.1 + 1e-6
    assert rate >= 0.4 and rate >= base + 0.3  # measured 0.60
