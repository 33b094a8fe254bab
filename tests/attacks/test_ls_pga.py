"""LS-PGA (attacks.ls_pga, Buckman et al. 2018, Alg. 3) and the BPDA
attack model of attacks.bpda.with_straight_through, the two adaptive
attacks on thermometer-encoded networks, against NumPy references and on a
small thermometer CNN trained on real Fashion-MNIST (the session fixture
`thermometer_net`)."""

import keras
import numpy as np
import pytest
from keras import ops

import attacks
from attacks.ls_pga import (hard_code, ls_pga, ls_pga_buckets, reachable_mask,
                            relaxed_encoding)
from attacks.bpda import with_straight_through
from core import backends
from layers import BitDepthReduction, ThermometerEncoding
from tests.attacks.thermometer_net import (EPS, LEVELS, T, accuracy,
                                           np_bucket, thermometer_cnn)


def test_reachable_mask_matches_interval_reference():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(size=200), T, [0.0, 1.0, 0.999,
                        T[3] - 1e-7, T[3] + 1e-7]]).astype("float32")
    x = x.reshape(1, -1, 1, 1)
    for eps in (0.0, 0.03, EPS, 0.5):
        got = np.asarray(reachable_mask(x, eps, LEVELS))
        lo = np.maximum(x - np.float32(eps), 0)[..., None]
        hi = np.minimum(x + np.float32(eps), 1)[..., None]
        upper = np.append(T[1:], np.inf)
        # bucket b = [t_b, t_b+1) meets [lo, hi]
        want = (T <= hi) & (upper > lo)
        np.testing.assert_array_equal(got, want)
        assert got.sum(-1).min() >= 1  # x's own bucket


def test_relaxed_encoding_matches_numpy_and_tends_to_the_hard_code():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 3, 2, LEVELS)).astype("float32")
    mask = rng.uniform(size=logits.shape) < 0.5
    mask[..., 5] = True
    z = np.where(mask, logits / 0.7, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.cumsum(p[..., ::-1], -1)[..., ::-1].reshape(2, 3, 3, -1)
    got = np.asarray(relaxed_encoding(logits, mask, 0.7))
    np.testing.assert_allclose(got, want, atol=1e-6)
    buckets = np.argmax(np.where(mask, logits, -np.inf), -1)
    cold = np.asarray(relaxed_encoding(logits, mask, 1e-5))
    np.testing.assert_allclose(cold, np.asarray(hard_code(buckets, LEVELS)),
                               atol=1e-6)
    # Logits peaked on x's own bucket give ThermometerEncoding(x) itself.
    x = rng.uniform(size=(2, 3, 3, 2)).astype("float32")
    own = 3.0 * np.eye(LEVELS, dtype="float32")[np_bucket(x)]
    cold = relaxed_encoding(own, np.ones_like(own, bool), 1e-3)
    np.testing.assert_allclose(np.asarray(cold),
                               np.asarray(ThermometerEncoding(LEVELS)(x)),
                               atol=1e-6)


def test_ls_pga_codes_are_reachable_thermometer_codes(thermometer_net):
    net, x, y = thermometer_net
    buckets = np.asarray(ls_pga_buckets(net, x, y, eps=EPS, steps=3,
                                        seed=1))
    lo, hi = np_bucket(np.maximum(x - EPS, 0)), np_bucket(x + EPS)
    assert np.all((lo <= buckets) & (buckets <= hi))
    code = np.asarray(hard_code(buckets, LEVELS)).reshape(*x.shape, LEVELS)
    assert set(np.unique(code)) <= {0.0, 1.0}
    assert np.all(np.diff(code, axis=-1) <= 0)  # monotone bits
    np.testing.assert_array_equal(code.sum(-1) - 1, buckets)
    x_adv = ls_pga(net, x, y, eps=EPS, steps=3, seed=1)
    assert x_adv.shape == x.shape
    assert keras.backend.standardize_dtype(x_adv.dtype) == "float32"
    assert 0.0 <= float(ops.min(x_adv)) <= float(ops.max(x_adv)) <= 1.0
    assert float(np.abs(np.asarray(x_adv) - x).max()) <= EPS + 1e-6
    np.testing.assert_array_equal(
        ThermometerEncoding(LEVELS)(x_adv), hard_code(buckets, LEVELS))
    assert np.mean(buckets != np_bucket(x)) > 0.05  # it did move
    np.testing.assert_array_equal(  # the seed fixes the start
        x_adv, ls_pga(net, x, y, eps=EPS, steps=3, seed=1))


def test_ls_pga_lowers_accuracy_and_eps_zero_is_identity(thermometer_net):
    net, x, y = thermometer_net
    clean = accuracy(net, x, y)
    assert clean > 0.7
    x_adv = ls_pga(net, x, y, eps=EPS, steps=4, seed=0)
    assert accuracy(net, x_adv, y) < clean - 0.4
    same = ls_pga(net, x, None, eps=0.0, steps=2, seed=0)
    np.testing.assert_array_equal(ThermometerEncoding(LEVELS)(same),
                                  ThermometerEncoding(LEVELS)(x))


def test_one_hot_mode():
    net = thermometer_cnn(levels=8, mode="one_hot")
    x = np.random.default_rng(2).uniform(size=(4, 28, 28, 1)).astype(
        "float32")
    buckets = ls_pga_buckets(net, x, None, eps=0.2, steps=2, seed=0)
    x_adv = ls_pga(net, x, None, eps=0.2, steps=2, seed=0)
    np.testing.assert_array_equal(net.layers[1](x_adv),
                                  hard_code(buckets, 8, "one_hot"))


def test_network_without_leading_thermometer_is_refused():
    inputs = keras.Input((28, 28, 1))
    h = ThermometerEncoding(LEVELS)(BitDepthReduction(4)(inputs))
    squeezed = keras.Model(inputs, keras.layers.Dense(10)(
        keras.layers.Flatten()(h)))
    with pytest.raises(ValueError, match="BitDepthReduction"):
        ls_pga(squeezed, np.zeros((1, 28, 28, 1), "float32"), None,
                  eps=EPS, steps=1)


def test_registered_and_runs_on_the_straight_through_copy(thermometer_net):
    """evaluate.py crafts on the BPDA copy; its encoding layer is still a
    ThermometerEncoding, so LS-PGA gives the same examples there."""
    net, x, y = thermometer_net
    assert attacks.get_attack("ls_pga") is ls_pga
    x, y = x[:32], y[:32]
    np.testing.assert_array_equal(
        np.asarray(ls_pga(with_straight_through(net), x, y, eps=EPS, steps=2,
                          seed=4)),
        np.asarray(ls_pga(net, x, y, eps=EPS, steps=2, seed=4)))


# -- BPDA: attacks.bpda.with_straight_through --------------------------------

def _input_grad(model, x):
    """d sum model(x) / dx as numpy; None where the backend reports no
    gradient at all (TensorFlow's None on the tape)."""
    try:
        _, _, grad = backends.value_and_grad(
            lambda v: (ops.sum(model(v, training=False)), None), x)
    except ValueError as e:
        if "no gradient" not in str(e):
            raise
        return None
    return np.asarray(grad)


def test_straight_through_clone_is_exact_and_has_gradients(thermometer_net):
    net = thermometer_net[0]
    clone = with_straight_through(net)
    x = np.random.default_rng(4).uniform(size=(8, 28, 28, 1)).astype(
        "float32")
    np.testing.assert_array_equal(np.asarray(net(x)), np.asarray(clone(x)))
    assert [id(w) for w in clone.weights] == [id(w) for w in net.weights]
    assert clone.layers[1].get_config()["surrogate"] == "soft"
    assert net.layers[1].get_config()["surrogate"] == "none"
    if backends.BACKEND == "tensorflow":
        assert _input_grad(net, x) is None
    else:  # JAX differentiates the hard encoding to an exact zero
        np.testing.assert_array_equal(_input_grad(net, x), 0.0)
    grad = _input_grad(clone, x)
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0


def test_bpda_pgd_breaks_the_original_model(thermometer_net):
    net, x, y = thermometer_net
    clean = accuracy(net, x, y)
    if backends.BACKEND == "tensorflow":  # JAX: a zero gradient, no error
        with pytest.raises(ValueError, match="bpda"):
            attacks.pgd(net, x, y, eps=EPS, step_size=0.01, steps=2)
    x_adv = attacks.pgd(with_straight_through(net), x, y, eps=EPS,
                        step_size=0.02, steps=10, seed=0)
    assert float(np.abs(np.asarray(x_adv) - x).max()) <= EPS + 1e-6
    assert accuracy(net, x_adv, y) < clean - 0.4


def test_identity_straight_through_for_squeezers():
    inputs = keras.Input((4, 4, 1))
    dense = keras.layers.Dense(3)
    net = keras.Model(inputs, dense(keras.layers.Flatten()(
        BitDepthReduction(bits=2)(inputs))))
    clone = with_straight_through(net)
    x = np.random.default_rng(5).uniform(size=(3, 4, 4, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(net(x)), np.asarray(clone(x)))
    # identity backward: d sum(W^T flatten(x) + b) / dx = row sums of W
    kernel = ops.convert_to_numpy(dense.kernel)
    want = np.broadcast_to(kernel.sum(1).reshape(4, 4, 1), x.shape)
    np.testing.assert_allclose(_input_grad(clone, x), want, rtol=1e-6)


def test_straight_through_refuses_subclassed_models():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Functional or Sequential"):
        with_straight_through(Net())
