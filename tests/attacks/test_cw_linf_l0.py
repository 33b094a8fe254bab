"""Carlini-Wagner L-inf and L0: contract properties, closed-form checks on a
linear model, and strength on a CNN trained on real Fashion-MNIST."""

import itertools
import time

import keras
import numpy as np
import pytest
from keras import ops

from attacks.cw_l0 import cw_l0
from attacks.cw_linf import cw_linf
from tests.attacks import linear_model
from tests.attacks.linear_model import float64_scope, to_numpy

N = 20  # correctly classified CNN test images attacked
# Short budgets for CPU tests (the defaults use more Adam steps).
FAST_LINF = dict(steps=30, learning_rate=0.05, c_init=0.1)
FAST_L0 = dict(steps=30, learning_rate=0.1, prune_fraction=0.2, c_max=20.0)
ATTACKS = {"cw_linf": cw_linf, "cw_l0": cw_l0}


class LinearSoftmax(linear_model.LinearSoftmax):
    """The shared linear model, called through `keras.ops` so that it runs
    on every backend (inside a compiled JAX loop too)."""

    def __call__(self, x):
        return ops.matmul(ops.reshape(x, (-1, 12)), self.W) + self.B


def _linf(a, b):
    return np.abs(a - b).reshape(len(a), -1).max(1)


def _pixels(a, b):
    """Changed pixels (any channel) per example."""
    return np.any(a != b, axis=-1).sum(axis=(1, 2))


def _logits(model, x):
    out = model(ops.convert_to_tensor(x, "float32"))
    return to_numpy(out)


def _linear_near_boundary(n=8, seed=1):
    """A 2-class linear model and inputs whose exact minimal L-inf distance
    to the decision boundary, |margin| / ||w_1 - w_0||_1, is below 0.04:
    the inputs lie in [0.05, 0.95], so the box does not bind."""
    lin = LinearSoftmax(classes=2, seed=seed)
    x, _ = lin.inputs(300)
    z = _logits(lin, x)
    y = z.argmax(1).astype("int32")
    dist = np.abs(z[:, 1] - z[:, 0]) / np.abs(lin.W[:, 1] - lin.W[:, 0]).sum()
    sel = np.flatnonzero(dist < 0.04)[:n]
    assert len(sel) == n
    return lin, x[sel], y[sel], dist[sel]


def _min_l0(lin, x, y):
    """Exact minimal number of changed pixels (of the 4) that makes the
    linear model misclassify `x`, by enumeration: for a set of pixels the
    best move sets each channel to the box end favoured by w_j - w_y."""
    for k in range(1, 5):
        for pixels in itertools.combinations(range(4), k):
            for j in set(range(lin.classes)) - {int(y)}:
                dw = (lin.W[:, j] - lin.W[:, y]).reshape(2, 2, 3)
                xb = x.copy()
                for p in pixels:
                    r, c = divmod(p, 2)
                    xb[r, c] = np.where(dw[r, c] > 0, 1.0, 0.0)
                if _logits(lin, xb[None]).argmax() != y:
                    return k
    return 5


# ---------------------------------------------------------------- linear


def test_linf_matches_exact_distance_on_linear_model():
    lin, x, y, dist = _linear_near_boundary()
    x_adv = to_numpy(cw_linf(lin, x, y, steps=100, learning_rate=0.01))
    assert np.all(_logits(lin, x_adv).argmax(1) != y)
    ratio = _linf(x_adv, x) / dist
    print(f"\ncw_linf / exact L-inf distance on the linear model: {ratio}")
    # Cannot beat the exact minimum; tau shrinks by 0.9 per success, so the
    # result is within about 1 / 0.9 of it.
    assert np.all(ratio >= 1.0 - 1e-3)
    assert np.all(ratio <= 1.2) and np.median(ratio) <= 1.1


def test_linf_eps_projects_onto_ball():
    lin, x, y, dist = _linear_near_boundary()
    eps = 0.5 * float(dist.min())
    x_adv = to_numpy(cw_linf(lin, x, y, eps=eps, steps=50))
    assert np.all(_linf(x_adv, x) <= eps + 1e-6)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_l0_finds_few_pixels_on_linear_model():
    lin = LinearSoftmax(classes=3, seed=2)
    x, _ = lin.inputs(60)
    y = _logits(lin, x).argmax(1).astype("int32")
    exact = np.array([_min_l0(lin, xi, yi) for xi, yi in zip(x, y)])
    sel = np.flatnonzero(exact <= 2)[:8]
    x, y, exact = x[sel], y[sel], exact[sel]
    x_adv = to_numpy(cw_l0(lin, x, y, steps=100, learning_rate=0.1))
    count = _pixels(x_adv, x)
    print(f"\ncw_l0 pixels {count}, exact minimum {exact}")
    assert np.all(_logits(lin, x_adv).argmax(1) != y)
    assert np.all(count >= exact)  # cannot beat the exact minimum
    assert np.all(count < 4)  # fewer than the input's 4 pixels
    assert np.mean(count == exact) >= 0.75
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_targeted_and_confidence_on_linear_model(name):
    lin = LinearSoftmax(classes=3, seed=3)
    x, _ = lin.inputs(8)
    y = _logits(lin, x).argmax(1)
    target = ((y + 1) % 3).astype("int32")
    x_adv = to_numpy(ATTACKS[name](lin, x, target, targeted=True,
                              confidence=1.0, steps=100,
                              learning_rate=0.05))
    z = _logits(lin, x_adv)
    changed = np.any(x_adv != x, axis=(1, 2, 3))
    assert changed.mean() >= 0.75
    # Every reported success reaches the target with margin >= kappa.
    other = np.where(np.eye(3)[target] > 0, -np.inf, z).max(1)
    z_t = z[np.arange(8), target]
    assert np.all(z_t[changed] - other[changed] >= 1.0 - 1e-3)
    np.testing.assert_array_equal(x_adv[~changed], x[~changed])


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_dtype_kept_input_not_mutated_failures_unchanged(name):
    lin, x, y, _ = _linear_near_boundary()
    # float64 values off the float32 grid: a float32 round trip would show.
    with float64_scope():
        x64 = ops.convert_to_tensor(x.astype("float64") + 1e-10)
        before = to_numpy(x64).copy()
        assert before.dtype == np.float64
        out = ATTACKS[name](lin, x64, y, steps=20)
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
        assert out.shape == x64.shape
        np.testing.assert_array_equal(to_numpy(x64), before)
        out = to_numpy(out)
        changed = np.any(out != before, axis=(1, 2, 3))
        assert changed.all()
        assert out.min() >= 0.0 and out.max() <= 1.0
        # A budget too small to succeed: x comes back bit for bit.
        fail = to_numpy(ATTACKS[name](lin, x64, y, steps=1, learning_rate=1e-7,
                                 c_max=1.0, max_rounds=1))
        np.testing.assert_array_equal(fail, before)
    xs = x.copy()
    ATTACKS[name](lin, xs, None, steps=5)
    np.testing.assert_array_equal(xs, x)


# ---------------------------------------------------------------- errors


def _toy(x):
    return ops.reshape(x, (-1, 4))[:, :3]


_COMMON_BAD = [
    (dict(confidence=-1.0), "confidence"),
    (dict(c_init=0.0), "c_init"),
    (dict(c_init=-1.0), "c_init"),
    (dict(c_init=float("nan")), "c_init"),
    (dict(c_init=50.0, c_max=20.0), "c_max"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(max_rounds=0), "max_rounds"),
    (dict(clip_min=1.0, clip_max=0.0), "clip_min"),
    (dict(targeted=True, y=None), "targeted"),
]
_BAD = ([("cw_linf",) + case for case in _COMMON_BAD + [
    (dict(tau_init=0.0), "tau_init"),
    (dict(tau_decay=1.0), "tau_decay"),
    (dict(tau_decay=0.0), "tau_decay"),
    (dict(eps=-0.1), "eps"),
]] + [("cw_l0",) + case for case in _COMMON_BAD + [
    (dict(prune_fraction=0.0), "prune_fraction"),
    (dict(prune_fraction=1.0), "prune_fraction"),
]])


@pytest.mark.parametrize("name, kwargs, match", _BAD)
def test_bad_args_raise(name, kwargs, match):
    x = np.full((2, 2, 2, 1), 0.5, "float32")
    kwargs = dict(kwargs)  # the cases are shared by both attacks
    y = kwargs.pop("y", np.array([0, 1], "int32"))
    with pytest.raises(ValueError, match=match):
        ATTACKS[name](_toy, x, y, **kwargs)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_x_outside_box_raises(name):
    x = np.full((2, 2, 2, 1), 1.5, "float32")
    with pytest.raises(ValueError, match="clip_min"):
        ATTACKS[name](_toy, x, np.array([0, 1], "int32"))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_registered(name):
    from attacks._registry import ATTACKS as REGISTRY
    assert REGISTRY.get(name) is ATTACKS[name]


# ---------------------------------------------------------------- CNN


@pytest.fixture(scope="module")
def setup(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:40], fmnist_test[1][:40]
    pred = np.argmax(to_numpy(model(x, training=False)), -1)
    keep = pred == y  # attack only correctly classified images
    assert keep.sum() >= N
    return model, x[keep][:N], y[keep][:N]


def _check_contract(x_adv, x, succ):
    assert x_adv.dtype == x.dtype and x_adv.shape == x.shape
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    # Reported success (x_adv != x) implies misclassified; else x unchanged.
    changed = np.any(x_adv != x, axis=(1, 2, 3))
    assert np.all(succ[changed])
    np.testing.assert_array_equal(x_adv[~changed], x[~changed])


def test_linf_breaks_natural_cnn_with_small_linf(setup):
    model, x, y = setup
    start = time.time()
    x_adv = to_numpy(cw_linf(model, x, y, **FAST_LINF))
    seconds = time.time() - start
    succ = np.argmax(to_numpy(model(x_adv, training=False)), -1) != y
    linf = _linf(x_adv, x)
    print(f"\ncw_linf on {len(x)} images: success {succ.mean():.3f}, median "
          f"L-inf {np.median(linf[succ]):.4f}, max {linf[succ].max():.4f}, "
          f"{seconds:.1f} s")
    _check_contract(x_adv, x, succ)
    assert succ.mean() >= 0.9
    # PGD-20 at eps = 0.1 broke 84% of 25 such images (measured); the
    # minimum-norm attack needs less on the median image.
    assert np.median(linf[succ]) < 0.1


def test_l0_breaks_natural_cnn_with_few_pixels(setup):
    model, x, y = setup
    start = time.time()
    x_adv = to_numpy(cw_l0(model, x, y, **FAST_L0))
    seconds = time.time() - start
    succ = np.argmax(to_numpy(model(x_adv, training=False)), -1) != y
    pixels = _pixels(x_adv, x)
    print(f"\ncw_l0 on {len(x)} images: success {succ.mean():.3f}, median "
          f"pixels changed {np.median(pixels[succ]):.0f} of 784, max "
          f"{pixels[succ].max()}, {seconds:.1f} s")
    _check_contract(x_adv, x, succ)
    assert succ.mean() >= 0.8
    assert np.median(pixels[succ]) <= 60
