"""APGD-CE / APGD-DLR (Croce & Hein 2020, arXiv 2003.01690, Alg. 1):
contract properties, the checkpoint schedule, the DLR loss against numpy,
and strength on a CNN trained on real Fashion-MNIST."""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

from attacks.apgd import apgd_ce, apgd_dlr
from tests.attacks.linear_model import LinearSoftmax, float64_scope, to_numpy

apgd_module = importlib.import_module("attacks.apgd")
pgd = importlib.import_module("attacks.pgd").pgd


LIN = LinearSoftmax(classes=5, seed=0)
RNG, linear, _inputs = LIN.rng, LIN, LIN.inputs


@pytest.mark.parametrize("norm,eps", [("inf", 0.05), ("2", 0.3)])
@pytest.mark.parametrize("fn", [apgd_ce, apgd_dlr])
def test_norm_bound_box_dtype_and_no_mutation(fn, norm, eps):
    x, y = _inputs()
    x_before = x.copy()
    x_adv = to_numpy(fn(linear, x, y, eps=eps, steps=10, norm=norm, seed=0))
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    np.testing.assert_array_equal(x, x_before)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    d = (x_adv - x).reshape(len(x), -1)
    bound = np.abs(d).max(1) if norm == "inf" else np.linalg.norm(d, axis=1)
    assert bound.max() <= eps + 1e-6
    assert bound.max() > 0.5 * eps  # it moved


def test_float64_keeps_dtype_and_eps_zero_is_identity():
    x, y = _inputs()
    with float64_scope():
        out = apgd_ce(linear, x.astype("float64"), y, eps=0.1, steps=3,
                      seed=0)
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
    for fn in (apgd_ce, apgd_dlr):
        same = fn(linear, x, y, eps=0.0, steps=5, seed=0)
        np.testing.assert_array_equal(to_numpy(same), x)


def test_checkpoint_schedule_matches_the_formula():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (next 1.05 > 1);
    # w_j = ceil(p_j * N).
    assert apgd_module.checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93,
                                            99]
    assert apgd_module.checkpoints(50) == [0, 11, 21, 29, 35, 40, 44, 47, 50]
    thr = apgd_module._thresholds(100, 0.75)
    assert list(np.flatnonzero(thr >= 0)) == [22, 41, 57, 70, 80, 87, 93, 99]
    np.testing.assert_allclose(thr[41], 0.75 * 19)


def _np_dlr(z, y):
    s = np.sort(z, 1)[:, ::-1]
    z_y = z[np.arange(len(z)), y]
    other = z.copy()
    other[np.arange(len(z)), y] = -np.inf
    return -(z_y - other.max(1)) / (s[:, 0] - s[:, 2] + 1e-12)


def _np_dlr_targeted(z, y, t):
    s = np.sort(z, 1)[:, ::-1]
    r = np.arange(len(z))
    return -(z[r, y] - z[r, t]) / (s[:, 0] - 0.5 * (s[:, 2] + s[:, 3])
                                    + 1e-12)


def test_dlr_losses_match_numpy():
    z = RNG.normal(size=(32, 10)).astype("float32") * 3
    y = RNG.integers(0, 10, size=32).astype("int32")
    t = ((y + RNG.integers(1, 10, size=32)) % 10).astype("int32")
    np.testing.assert_allclose(to_numpy(apgd_module.dlr_loss(z, y)),
                               _np_dlr(z, y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(apgd_module.targeted_dlr_loss(z, y, t)),
        _np_dlr_targeted(z, y, t), rtol=1e-5, atol=1e-6)
    # shift and scale invariance
    np.testing.assert_allclose(to_numpy(apgd_module.dlr_loss(4 * z + 7, y)),
                               _np_dlr(z, y), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm="linf"), r"norm must be one of \('inf', '2'\); got 'linf'"),
    (dict(eps=-0.1), "eps must be a finite number >= 0; got -0.1"),
    (dict(steps=0), "steps must be an integer >= 1; got 0"),
    (dict(restarts=0), "restarts must be an integer >= 1; got 0"),
    (dict(rho=1.5), r"rho must be a number in \(0, 1\]; got 1.5"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    x, y = _inputs()
    args = dict(eps=0.1, steps=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        apgd_ce(linear, x, y, **args)


def test_targeted_needs_targets_and_dlr_needs_classes():
    x, y = _inputs()
    with pytest.raises(ValueError, match="needs the target labels"):
        apgd_dlr(linear, x, None, eps=0.1, targeted=True)

    def three(v):
        return linear(v)[:, :3]

    with pytest.raises(ValueError, match="targeted DLR needs >= 4 classes"):
        apgd_dlr(three, x, y % 3, eps=0.1, targeted=True)


@pytest.mark.tensorflow_only  # tf.function's tracing count
def test_no_retracing_across_eps_values():
    x, y = _inputs()
    apgd_ce(linear, x, y, eps=0.1, steps=4)
    before = apgd_module._LOOP.experimental_get_tracing_count()
    for eps in (0.01, 0.02, 0.3):
        apgd_ce(linear, x, y, eps=eps, steps=4)
    assert apgd_module._LOOP.experimental_get_tracing_count() == before


# --- strength on a naturally trained Fashion-MNIST CNN (session fixture) ---

def _correct(model, x, y):
    return np.argmax(model.predict(to_numpy(x), verbose=0, batch_size=200),
                     1) == y


def test_apgd_ce_at_least_as_strong_as_pgd(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:200], fmnist_test[1][:200]
    x_pgd = pgd(model, x, y, eps=0.1, step_size=0.01, steps=20, seed=0)
    x_apgd = apgd_ce(model, x, y, eps=0.1, steps=50, seed=0)
    pgd_acc = _correct(model, x_pgd, y).mean()
    apgd_acc = _correct(model, x_apgd, y).mean()
    d = np.abs(to_numpy(x_apgd) - x).max()
    assert d <= 0.1 + 1e-6
    assert apgd_acc <= pgd_acc + 0.01, (apgd_acc, pgd_acc)
    assert apgd_acc <= 0.10, apgd_acc


def test_targeted_apgd_dlr_reaches_random_targets(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:200], fmnist_test[1][:200]
    target = (y + RNG.integers(1, 10, size=y.shape)).astype("int32") % 10
    x_adv = apgd_dlr(model, x, target, eps=0.2, steps=50, targeted=True,
                     y_true=y, seed=0)
    hit = np.argmax(model.predict(to_numpy(x_adv), verbose=0), 1) == target
    assert hit.mean() >= 0.80, hit.mean()


def test_restarts_never_raise_robust_accuracy(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:200], fmnist_test[1][:200]
    kw = dict(eps=0.03, steps=10, seed=3)
    one = apgd_dlr(model, x, y, restarts=1, **kw)
    many = apgd_dlr(model, x, y, restarts=3, **kw)
    ok_one, ok_many = _correct(model, one, y), _correct(model, many, y)
    # Per example: restart 0 is the same run, and the worst case is kept.
    assert not np.any(ok_many & ~ok_one)
    assert ok_many.mean() <= ok_one.mean()
