"""The TRADES inner maximisation (attacks.trades_kl, Zhang et al. 2019,
arXiv 1901.08573, Alg. 1 lines 4-7): equality with a NumPy reference on a
linear model, the L-inf / box bounds, inference mode, the KL increase, the
registered name and the argument checks."""

import numpy as np
import pytest
from keras import ops

import attacks
from attacks.trades_kl import kl_divergence, trades_kl
from core import backends
from tests.attacks.kl_reference import (SHAPE, batch, bn_net, linear_net,
                                       log_softmax, np_kl)


def test_inner_max_matches_numpy_sign_steps():
    """For logits = flatten(x) @ w + b, grad_x' KL(p(x) || p(x')) =
    (softmax(z') - softmax(z)) @ w.T per example."""
    eps, step, steps, seed = 0.1, 0.04, 3, (5, 7)
    net = linear_net()
    x, _ = batch()
    w, b = (ops.convert_to_numpy(v).astype("float64")
            for v in net.trainable_variables)
    flat = x.reshape(len(x), -1)
    p = np.exp(log_softmax(flat @ w + b))
    noise = ops.convert_to_numpy(backends.stateless_normal(x.shape, seed))
    x_adv = x + 0.001 * noise.astype("float64")
    for _ in range(steps):
        q = np.exp(log_softmax(x_adv.reshape(len(x), -1) @ w + b))
        grad = ((q - p) @ w.T).reshape(x.shape)
        x_adv = np.clip(x + np.clip(x_adv + step * np.sign(grad) - x, -eps,
                                    eps), 0.0, 1.0)
    got = trades_kl(net, x, None, eps=eps, step_size=step, steps=steps,
                    seed=seed)
    np.testing.assert_allclose(ops.convert_to_numpy(got), x_adv, atol=1e-6)


def test_inner_max_bounds_inference_mode_and_kl_increase():
    eps, seed = 0.1, (1, 2)
    net = bn_net()
    x, _ = batch(n=16)
    stats = [ops.convert_to_numpy(v) for v in net.non_trainable_variables]
    x_adv = ops.convert_to_numpy(trades_kl(net, x, None, eps=eps,
                                           step_size=0.03, steps=5,
                                           seed=seed))
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    start = x + 0.001 * ops.convert_to_numpy(
        backends.stateless_normal(x.shape, seed))

    def kl(z):
        return np_kl(net(x, training=False), net(z, training=False))

    assert kl(x_adv).mean() > 10 * kl(start).mean()
    assert (kl(x_adv) >= kl(start)).mean() > 0.9
    # BatchNorm ran in inference mode: its moving statistics are untouched.
    for before, after in zip(stats, net.non_trainable_variables):
        np.testing.assert_array_equal(before, ops.convert_to_numpy(after))


def test_registered_and_kl_matches_numpy():
    assert attacks.get_attack("trades_kl") is trades_kl
    rng = np.random.default_rng(0)
    zp, zq = (rng.normal(size=(5, 4)).astype("float32") * 3 for _ in "pq")
    np.testing.assert_allclose(kl_divergence(zp, zq), np_kl(zp, zq),
                               rtol=1e-5, atol=1e-6)


def test_int_seed_is_the_pair_seed_zero():
    net = linear_net()
    x, y = batch()
    a = trades_kl(net, x, y, eps=0.1, step_size=0.04, steps=2, seed=5)
    b = trades_kl(net, x, None, eps=0.1, step_size=0.04, steps=2,
                  seed=(5, 0))
    np.testing.assert_array_equal(ops.convert_to_numpy(a),
                                  ops.convert_to_numpy(b))


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1, step_size=0.01, steps=1), "eps must be"),
    (dict(eps=0.1, step_size=0.0, steps=1), "step_size must be"),
    (dict(eps=0.1, step_size=0.01, steps=0), "steps must be an integer"),
])
def test_bad_arguments(kwargs, match):
    x, _ = batch(n=2)
    with pytest.raises(ValueError, match=match):
        trades_kl(linear_net(), x, None, **kwargs)


def test_x_outside_the_box():
    with pytest.raises(ValueError, match=r"x must lie in \[clip_min, clip_max\]"):
        trades_kl(linear_net(), np.full((2, *SHAPE), 2.0, "float32"), None,
                  eps=0.1, step_size=0.01, steps=1)
