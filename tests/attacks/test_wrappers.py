"""Tests of the attack wrappers `eot` (Athalye et al. 2018, arXiv 1707.07397)
and `bpda` (Athalye, Carlini, Wagner 2018, arXiv 1802.00420, Sec. 4.1)."""

import keras
import numpy as np
import pytest
from keras import ops

from attacks.bpda import bpda
from attacks.eot import eot
from attacks.pgd import pgd
from core import backends
from layers import BitDepthReduction, RandomResizePad, ThermometerEncoding
from layers import StochasticActivationPruning
from tests.attacks.linear_model import to_numpy

SHAPE = (2, 4, 4, 1)
CLASSES = 3


def _x(seed=0, shape=SHAPE):
    return ops.convert_to_tensor(
        np.random.default_rng(seed).uniform(0, 1, shape).astype("float32"))


def _normal(shape, seed):
    """float32 standard normal draws keyed by the tuple `seed` (NumPy, so
    the first rows of a longer draw are the rows of a shorter one)."""
    return np.random.default_rng(list(seed)).normal(
        size=shape).astype("float32")


def _grad(objective, x):
    """`d objective(x) / dx` as numpy; None where the backend reports no
    gradient at all (TensorFlow's None)."""
    try:
        _, _, g = backends.value_and_grad(lambda v: (objective(v), None), x)
    except ValueError as e:
        if "no gradient" not in str(e):
            raise
        return None
    return ops.convert_to_numpy(g)


class RandomLinear:
    """Fake randomized model: call k uses the known map W_k (seed k)."""

    def __init__(self):
        self.calls = 0

    def weight(self, k):
        return _normal((16, CLASSES), (7, k))

    def __call__(self, x):
        w = self.weight(self.calls)
        self.calls += 1
        return ops.matmul(ops.reshape(x, (-1, 16)), w)


class PerRowNoise:
    """Fake per-example-random model: fixed linear map plus a noise vector
    that depends on the row of the (tiled) batch."""

    w = _normal((16, CLASSES), (1, 2))

    def __call__(self, x):
        noise = _normal((x.shape[0], CLASSES), (3, 4))
        return ops.matmul(ops.reshape(x, (-1, 16)), self.w) + noise


def _classifier(input_shape=(4, 4, 1)):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(CLASSES)])


# --------------------------------------------------------------------- eot
def test_eot_equals_mean_of_explicit_draws_and_gradients():
    x = _x()
    fake, ref = RandomLinear(), RandomLinear()
    f = eot(fake, samples=5)
    assert f.eot_samples == 5 and f.wrapped is fake
    c = _normal((SHAPE[0], CLASSES), (5, 5))

    def objective(v):
        out = f(v)
        return ops.sum(out * c), out

    _, out, grad = backends.value_and_grad(objective, x)
    out, grad = to_numpy(out), to_numpy(grad)
    draws = [to_numpy(ref(x)) for _ in range(5)]
    np.testing.assert_allclose(out, np.mean(draws, 0), atol=1e-6)
    assert fake.calls == 5
    w_mean = np.mean([ref.weight(k) for k in range(5)], 0)
    expected = np.reshape(c @ w_mean.T, SHAPE)
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_eot_batched_tiles_sample_major():
    x = _x()
    out = to_numpy(eot(PerRowNoise(), samples=4, batched=True)(x))
    noise = _normal((4 * SHAPE[0], CLASSES), (3, 4))
    expected = (np.reshape(to_numpy(x), (-1, 16)) @ PerRowNoise.w
                + np.mean(np.reshape(noise, (4, SHAPE[0], CLASSES)), 0))
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("batched", [False, True])
def test_eot_of_deterministic_model_is_the_model(batched):
    model, x = _classifier(), _x()
    np.testing.assert_allclose(to_numpy(eot(model, 3, batched=batched)(x)),
                               to_numpy(model(x, training=False)), atol=1e-6)


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
    y = np.array([0], "int32")

    def grad(f):
        return _grad(lambda v: ops.sum(ops.sparse_categorical_crossentropy(
            y, f(v), from_logits=True)), x)

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
    x_adv = to_numpy(pgd(eot(model, 4), x, np.array([0, 1], "int32"), eps=eps,
                    step_size=0.05, steps=3, seed=0))
    delta = np.abs(x_adv - to_numpy(x))
    assert delta.max() <= eps + 1e-6 and delta.max() > 0
    assert x_adv.min() >= 0 and x_adv.max() <= 1


# -------------------------------------------------------------------- bpda
def test_bpda_forward_is_bit_exact():
    x = _x(3, (2, 5, 5, 3))
    bdr = BitDepthReduction(bits=3)
    assert np.array_equal(to_numpy(bpda(bdr)(x)), to_numpy(bdr(x)))
    therm = ThermometerEncoding(levels=8)
    out = bpda(therm, therm.soft_encode)(x)
    assert np.array_equal(to_numpy(out), to_numpy(therm.hard_encode(x)))


def test_bpda_identity_gradient_through_rounding():
    x = _x(4)
    c = _normal(SHAPE, (9, 9))
    plain = _grad(lambda v: ops.sum(ops.round(v) * c), x)
    if backends.BACKEND == "tensorflow":
        assert plain is None  # rounding: no gradient at all
    else:
        np.testing.assert_array_equal(plain, 0.0)  # JAX: an exact zero
    np.testing.assert_array_equal(
        _grad(lambda v: ops.sum(bpda(ops.round)(v) * c), x), c)


def test_bpda_gradient_is_surrogate_gradient():
    x = _x(5, (2, 4, 4, 2))
    therm = ThermometerEncoding(levels=8)
    c = _normal((2, 4, 4, 16), (2, 2))
    g = _grad(lambda v: ops.sum(bpda(therm, therm.soft_encode)(v) * c), x)
    soft = _grad(lambda v: ops.sum(therm.soft_encode(v) * c), x)
    np.testing.assert_allclose(g, soft, atol=1e-6)
    assert np.abs(g).max() > 0


def test_pgd_through_bpda_moves_x_where_plain_gradient_is_zero():
    clf, x, y = _classifier(), _x(6), np.array([0, 1], "int32")
    bdr = BitDepthReduction(bits=1)
    plain_model = lambda v: clf(bdr(v), training=False)  # noqa: E731
    g = _grad(lambda v: ops.sum(plain_model(v)), x)
    assert g is None or np.abs(g).max() == 0  # None: TF's unconnected
    enc = bpda(bdr)
    x_adv = pgd(lambda v: clf(enc(v), training=False), x, y, eps=0.2,
                step_size=0.1, steps=2, rand_init=False)
    delta = np.abs(to_numpy(x_adv) - to_numpy(x))
    assert delta.max() > 0 and delta.max() <= 0.2 + 1e-6
