"""Box-constrained L-BFGS (Szegedy et al. 2014): the exact minimal distance
on a linear model, strength on a CNN trained on real Fashion-MNIST, and the
API contract."""


import keras
import numpy as np
import pytest
from keras import ops

from attacks.lbfgs import lbfgs
from tests.attacks import linear_model
from tests.attacks.linear_model import float64_scope, to_numpy


class LinearSoftmax(linear_model.LinearSoftmax):
    """The shared linear model, called through `keras.ops` so that it runs
    on every backend (inside a compiled JAX function too)."""

    def __call__(self, x):
        return ops.matmul(ops.reshape(x, (-1, 12)), self.W) + self.B


def _l2(a, b):
    return np.linalg.norm(
        (np.asarray(a, np.float64) - b).reshape(len(a), -1), axis=1)


@pytest.fixture(scope="module")
def linear():
    """A 2-class linear softmax model and inputs whose minimal perturbation
    stays well inside [0, 1] (so the box does not bind)."""
    model = LinearSoftmax(classes=2, seed=0)
    x = model.rng.uniform(0.4, 0.6, size=(8, 2, 2, 3)).astype("float32")
    z = x.reshape(8, 12) @ model.W + model.B
    d = model.W[:, 1] - model.W[:, 0]
    dist = np.abs(z[:, 1] - z[:, 0]) / np.linalg.norm(d)
    # The exact minimiser x - sign(margin) * dist * d / |d| is in the box.
    step = -np.sign(z[:, 1] - z[:, 0])[:, None] * dist[:, None] \
        * d / np.linalg.norm(d)
    inner = x.reshape(8, 12) + step
    assert inner.min() > 0.01 and inner.max() < 0.99
    return model, x, z.argmax(1).astype("int32"), dist


@pytest.mark.parametrize("targeted, batch_size", [
    (False, None), (True, None), (True, 1)])
def test_linear_model_reaches_exact_minimal_distance(linear, targeted,
                                                     batch_size):
    model, x, pred, dist = linear
    y = (1 - pred) if targeted else pred
    x_adv = to_numpy(lbfgs(model, x, y, targeted=targeted, batch_size=batch_size,
                      binary_search_steps=8, steps=50))
    z = x_adv.reshape(8, 12) @ model.W + model.B
    assert np.all(z.argmax(1) != pred)
    ratio = _l2(x_adv, x) / dist
    print(f"\nlbfgs linear L2 / exact: {np.round(ratio, 4)}")
    # Never below the exact minimum (float tolerance); above it by at most
    # the resolution of 8 search steps on c: after bracketing within a
    # factor 10, each geometric bisection halves log10(c_hi / c_lo), and
    # d log(L2) / d log(c) = -2 / (2 + margin) here (measured worst 1.01).
    assert np.all(ratio >= 1.0 - 1e-4)
    assert np.all(ratio <= 1.05)


@pytest.fixture(scope="module")
def cnn(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:40], fmnist_test[1][:40]
    keep = np.argmax(to_numpy(model(x, training=False)), -1) == y
    return model, x[keep][:20], y[keep][:20]


def test_targeted_reaches_random_targets_on_cnn(cnn):
    model, x, y = cnn
    rng = np.random.default_rng(0)
    t = ((y + rng.integers(1, 10, size=len(y))) % 10).astype("int32")
    x_adv = to_numpy(lbfgs(model, x, t, targeted=True, binary_search_steps=5,
                      steps=30))
    pred = np.argmax(to_numpy(model(x_adv, training=False)), -1)
    succ = pred == t
    l2 = _l2(x_adv, x)
    print(f"\nlbfgs targeted on fmnist_cnn: success {succ.mean():.2f}, "
          f"median L2 {np.median(l2[succ]):.3f}")
    assert succ.mean() >= 0.8
    assert np.median(l2[succ]) < 3.0
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    changed = np.any(x_adv != x, axis=(1, 2, 3))
    assert np.all(succ[changed])
    np.testing.assert_array_equal(x_adv[~changed], x[~changed])


def test_untargeted_on_cnn(cnn):
    model, x, y = cnn
    x_adv = to_numpy(lbfgs(model, x[:10], y[:10], binary_search_steps=3,
                      steps=20))
    pred = np.argmax(to_numpy(model(x_adv, training=False)), -1)
    assert np.mean(pred != y[:10]) >= 0.8
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def _unreachable(x):
    """Class 1 can never win inside [0, 1]: logits (sum(x), sum(x) - 100)."""
    s = ops.sum(ops.reshape(ops.cast(x, "float32"), (-1, 12)), -1)
    return ops.stack([s, s - 100.0], -1)


def test_failures_return_x_bit_for_bit(linear):
    _, x, _, _ = linear
    # float64 values that float32 cannot hold: a round trip would show.
    x64 = x.astype(np.float64) + 1e-10
    with float64_scope():
        out = lbfgs(_unreachable, x64, np.ones(8, "int32"), targeted=True,
                    binary_search_steps=2, steps=5)
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
        np.testing.assert_array_equal(to_numpy(out), x64)


def test_already_adversarial_input_is_returned(linear):
    model, x, pred, _ = linear
    out = to_numpy(lbfgs(model, x, 1 - pred, binary_search_steps=2, steps=5))
    np.testing.assert_array_equal(out, x)


def test_eps_projects_onto_l2_ball(linear):
    model, x, pred, dist = linear
    x_adv = to_numpy(lbfgs(model, x, pred, eps=0.1, binary_search_steps=3,
                      steps=20))
    assert np.all(_l2(x_adv, x) <= 0.1 + 1e-5)
    assert np.all(_l2(x_adv, x) > 0.0)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_box_binds(linear):
    # Inputs near the edges: the minimiser must stay inside [0, 1].
    model, _, _, _ = linear
    x = np.where(np.arange(12).reshape(1, 2, 2, 3) % 2 == 0, 0.02,
                 0.98).astype("float32").repeat(4, 0)
    x[1:] = np.clip(x[1:] + np.linspace(-0.1, 0.1, 3)[:, None, None, None],
                    0, 1)
    pred = np.argmax(to_numpy(model(x)), -1)
    x_adv = to_numpy(lbfgs(model, x, None, binary_search_steps=4, steps=30))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.all(np.argmax(to_numpy(model(x_adv)), -1) != pred)
    # The bounds are active: some pixels sit exactly on them.
    assert np.all(np.any((x_adv == 0.0) | (x_adv == 1.0), axis=(1, 2, 3)))


def test_input_not_mutated_and_dtype_kept(linear):
    model, x, pred, _ = linear
    with float64_scope():
        x64 = ops.convert_to_tensor(x, "float64")
        before = to_numpy(x64).copy()
        out = lbfgs(model, x64, pred, binary_search_steps=2, steps=10)
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
        assert out.shape == x64.shape
        np.testing.assert_array_equal(to_numpy(x64), before)
    xs = x.copy()
    lbfgs(model, xs, None, binary_search_steps=2, steps=10)
    np.testing.assert_array_equal(xs, x)


def test_empty_batch():
    model = LinearSoftmax(classes=2)
    x = np.zeros((0, 2, 2, 3), "float32")
    assert lbfgs(model, x, np.zeros(0, "int32")).shape == x.shape


def _toy(x):
    return ops.reshape(x, (-1, 4))[:, :3]


@pytest.mark.parametrize("kwargs, match", [
    (dict(c_init=0.0), "c_init"),
    (dict(c_init=-1.0), "c_init"),
    (dict(c_init=float("nan")), "c_init"),
    (dict(binary_search_steps=0), "binary_search_steps"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(eps=-0.1), "eps"),
    (dict(clip_min=1.0, clip_max=0.0), "clip_min"),
    (dict(clip_min=0.5, clip_max=0.5), "clip_min"),
    (dict(targeted=True, y=None), "targeted"),
])
def test_bad_args_raise(kwargs, match):
    x = np.full((2, 2, 2, 1), 0.5, "float32")
    y = kwargs.pop("y", np.array([0, 1], "int32"))
    with pytest.raises(ValueError, match=match):
        lbfgs(_toy, x, y, **kwargs)


def test_x_outside_box_raises():
    x = np.full((2, 2, 2, 1), 1.5, "float32")
    with pytest.raises(ValueError, match="clip_min"):
        lbfgs(_toy, x, np.array([0, 1], "int32"))


def test_registered():
    from attacks._registry import ATTACKS
    assert ATTACKS.get("lbfgs") is lbfgs
