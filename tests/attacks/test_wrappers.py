"""Tests of the attack wrappers `eot` (Athalye et al. 2018, arXiv 1707.07397)
and `bpda` (Athalye, Carlini, Wagner 2018, arXiv 1802.00420, Sec. 4.1)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks.bpda import bpda
from attacks.eot import eot
from attacks.pgd import pgd
from layers import BitDepthReduction, RandomResizePad, ThermometerEncoding
from layers import StochasticActivationPruning

SHAPE = (2, 4, 4, 1)
CLASSES = 3


def _x(seed=0, shape=SHAPE):
    return tf.constant(
        np.random.default_rng(seed).uniform(0, 1, shape).astype("float32"))


class RandomLinear:
    """Fake randomized model: call k uses the known map W_k (seed k)."""

    def __init__(self):
        self.calls = 0

    def weight(self, k):
        return tf.random.stateless_normal((16, CLASSES), (7, k))

    def __call__(self, x):
        w = self.weight(self.calls)
        self.calls += 1
        return tf.reshape(x, (-1, 16)) @ w


class PerRowNoise:
    """Fake per-example-random model: fixed linear map plus a noise vector
    that depends on the row of the (tiled) batch."""

    w = tf.random.stateless_normal((16, CLASSES), (1, 2))

    def __call__(self, x):
        n = tf.shape(x)[0]
        noise = tf.random.stateless_normal(tf.stack([n, CLASSES]), (3, 4))
        return tf.reshape(x, (-1, 16)) @ self.w + noise


def _classifier(input_shape=(4, 4, 1)):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(CLASSES)])


# --------------------------------------------------------------------- eot
def test_eot_equals_mean_of_explicit_draws_and_gradients():
    x = _x()
    fake, ref = RandomLinear(), RandomLinear()
    f = eot(fake, samples=5)
    assert f.eot_samples == 5 and f.wrapped is fake
    c = tf.random.stateless_normal((SHAPE[0], CLASSES), (5, 5))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = f(x)
        obj = tf.reduce_sum(out * c)
    grad = tape.gradient(obj, x)
    draws = [ref(x) for _ in range(5)]
    np.testing.assert_allclose(out, tf.reduce_mean(draws, 0), atol=1e-6)
    assert fake.calls == 5
    w_mean = tf.reduce_mean([ref.weight(k) for k in range(5)], 0)
    expected = tf.reshape(c @ tf.transpose(w_mean), SHAPE)
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_eot_batched_tiles_sample_major():
    x = _x()
    out = eot(PerRowNoise(), samples=4, batched=True)(x)
    noise = tf.random.stateless_normal((4 * SHAPE[0], CLASSES), (3, 4))
    expected = (tf.reshape(x, (-1, 16)) @ PerRowNoise.w
                + tf.reduce_mean(tf.reshape(noise, (4, SHAPE[0], CLASSES)), 0))
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("batched", [False, True])
def test_eot_of_deterministic_model_is_the_model(batched):
    model, x = _classifier(), _x()
    np.testing.assert_allclose(eot(model, 3, batched=batched)(x),
                               model(x, training=False), atol=1e-6)


@pytest.mark.parametrize("samples", [0, -1, 1.5, True, "2"])
def test_eot_rejects_bad_samples(samples):
    with pytest.raises(ValueError, match="samples"):
        eot(_classifier(), samples)


def test_eot_batched_refused_for_per_batch_random_layer():
    model = keras.Sequential([keras.Input((4, 4, 1)),
                              RandomResizePad(max_size=6, seed=0),
                              keras.layers.Flatten(),
                              keras.layers.Dense(CLASSES)])
    with pytest.raises(ValueError, match="RandomResizePad|random_resize_pad"):
        eot(model, 4, batched=True)
    sap = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                            StochasticActivationPruning(seed=0),
                            keras.layers.Dense(CLASSES)])
    assert eot(sap, 4, batched=True)(_x()).shape == (SHAPE[0], CLASSES)


def _rrp_model():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        RandomResizePad(max_size=12, min_size=6, interpolation="bilinear",
                        seed=1),
        keras.layers.Flatten(), keras.layers.Dense(CLASSES)])


def test_eot_gradient_on_random_resize_pad_reduces_variance():
    model, x = _rrp_model(), _x(1, (1, 8, 8, 1))
    y = tf.constant([0])

    def grad(f):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(y, f(x))
        return tape.gradient(loss, x).numpy()

    single = np.stack([grad(eot(model, 1)) for _ in range(8)])
    many = np.stack([grad(eot(model, 16)) for _ in range(8)])
    # Single draws disagree with each other and with the EOT average.
    assert np.abs(single[0] - single[1:]).max() > 1e-4
    assert np.abs(single[0] - many[0]).max() > 1e-4
    var_single = single.var(axis=0).sum()
    var_many = many.var(axis=0).sum()
    assert var_many < 0.5 * var_single


def test_pgd_composes_with_eot_and_keeps_bound():
    model, x = _rrp_model(), _x(2, (2, 8, 8, 1))
    eps = 0.1
    x_adv = pgd(eot(model, 4), x, tf.constant([0, 1]), eps=eps,
                step_size=0.05, steps=3, seed=0)
    delta = np.abs(x_adv.numpy() - x.numpy())
    assert delta.max() <= eps + 1e-6 and delta.max() > 0
    assert x_adv.numpy().min() >= 0 and x_adv.numpy().max() <= 1


# -------------------------------------------------------------------- bpda
def test_bpda_forward_is_bit_exact():
    x = _x(3, (2, 5, 5, 3))
    bdr = BitDepthReduction(bits=3)
    assert np.array_equal(bpda(bdr)(x).numpy(), bdr(x).numpy())
    therm = ThermometerEncoding(levels=8)
    out = bpda(therm, therm.soft_encode)(x)
    assert np.array_equal(out.numpy(), therm.hard_encode(x).numpy())


def test_bpda_identity_gradient_through_rounding():
    x = _x(4)
    c = tf.random.stateless_normal(SHAPE, (9, 9))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        plain = tf.reduce_sum(tf.round(x) * c)
        wrapped = tf.reduce_sum(bpda(tf.round)(x) * c)
    assert tape.gradient(plain, x) is None  # rounding: no gradient at all
    np.testing.assert_array_equal(tape.gradient(wrapped, x), c)


def test_bpda_gradient_is_surrogate_gradient():
    x = _x(5, (2, 4, 4, 2))
    therm = ThermometerEncoding(levels=8)
    c = tf.random.stateless_normal((2, 4, 4, 16), (2, 2))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        wrapped = tf.reduce_sum(bpda(therm, therm.soft_encode)(x) * c)
        soft = tf.reduce_sum(therm.soft_encode(x) * c)
    g = tape.gradient(wrapped, x)
    np.testing.assert_allclose(g, tape.gradient(soft, x), atol=1e-6)
    assert np.abs(g.numpy()).max() > 0


def test_pgd_through_bpda_moves_x_where_plain_gradient_is_zero():
    clf, x, y = _classifier(), _x(6), tf.constant([0, 1])
    bdr = BitDepthReduction(bits=1)
    plain_model = lambda v: clf(bdr(v), training=False)  # noqa: E731
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(plain_model(x))
    g = tape.gradient(loss, x, unconnected_gradients="zero")
    assert np.abs(g.numpy()).max() == 0
    enc = bpda(bdr)
    x_adv = pgd(lambda v: clf(enc(v), training=False), x, y, eps=0.2,
                step_size=0.1, steps=2, rand_init=False)
    delta = np.abs(x_adv.numpy() - x.numpy())
    assert delta.max() > 0 and delta.max() <= 0.2 + 1e-6
