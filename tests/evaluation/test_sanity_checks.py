"""Gradient-masking sanity checks: the pure checks on hand-made numbers,
the gradient check and `run_all` on the session CNN and on masked
versions of it (rounding input, stop_gradient, NaN, saturated softmax)."""

import dataclasses
import json

import keras
import numpy as np
import pytest

import layers
from evaluation import sanity_checks as sc

PGD = {"name": "pgd", "eps": 0.1, "step_size": 0.01, "steps": 10, "seed": 0}


@pytest.fixture(scope="module")
def cnn(fmnist_cnn):
    return keras.saving.load_model(fmnist_cnn)


@pytest.fixture(scope="module")
def data(fmnist_test):
    return fmnist_test[0][:200], fmnist_test[1][:200]


def _wrap(cnn, before=None, after=None):
    """The CNN with a layer before its input or after its logits."""
    inp = keras.Input((28, 28, 1))
    h = before(inp) if before else inp
    out = cnn(h, training=False)
    return keras.Model(inp, after(out) if after else out)


# --- pure checks on measured numbers -------------------------------------

def test_eps_curve_check():
    eps = [0, 0.05, 0.1, 0.3]
    ok = sc.eps_curve_check(eps, [0.9, 0.51, 0.15, 0.0])
    assert ok.passed and ok.name == "eps_curve"
    noisy = sc.eps_curve_check(eps, [0.9, 0.51, 0.515, 0.04])  # within tol
    assert noisy.passed
    rises = sc.eps_curve_check(eps, [0.9, 0.3, 0.4, 0.0])
    assert not rises.passed and "eps=0.1: 0.4000 > 0.3000" in rises.detail
    stuck = sc.eps_curve_check(eps, [0.9, 0.6, 0.5, 0.45])
    assert not stuck.passed and "0.4500 > zero_tol 0.05" in stuck.detail
    assert sc.eps_curve_check(eps, [0.9, 0.6, 0.5, 0.45], zero_tol=0.5).passed
    assert isinstance(ok.passed, bool)


def test_steps_curve_check():
    assert sc.steps_curve_check([1, 5, 20], [0.82, 0.40, 0.08]).passed
    assert sc.steps_curve_check([1, 5, 20], [0.40, 0.405, 0.40]).passed
    bad = sc.steps_curve_check([1, 10, 100], [0.5, 0.3, 0.45])
    assert not bad.passed and "steps=100" in bad.detail
    assert sc.steps_curve_check([1, 10, 100], [0.5, 0.3, 0.45], 0.2).passed


def test_whitebox_beats_check():
    ok = sc.whitebox_beats_check(0.10, {"square": 0.12, "spsa": 0.105,
                                        "transfer": 0.6})
    assert ok.passed and "none beats" in ok.detail
    bad = sc.whitebox_beats_check(0.40, {"square": 0.12, "fgsm": 0.7})
    assert not bad.passed
    assert "square: 0.1200" in bad.detail.split("tol")[-1]
    assert "fgsm" not in bad.detail.split("tol")[-1]


@pytest.mark.parametrize("call,match", [
    (lambda: sc.eps_curve_check([0, 0.1], [0.9, 1.5]), r"\[0, 1\]"),
    (lambda: sc.eps_curve_check([0, 0.1], [0.9]), "differ in length"),
    (lambda: sc.eps_curve_check([0.1, 0], [0.9, 0.1]), "strictly"),
    (lambda: sc.eps_curve_check([], []), "strictly"),
    (lambda: sc.steps_curve_check([1, 2.5], [0.9, 0.1]), "integers"),
    (lambda: sc.whitebox_beats_check(0.1, {}), "others"),
    (lambda: sc.whitebox_beats_check(-0.1, {"a": 0.2}), "whitebox_acc"),
    (lambda: sc.whitebox_beats_check(0.1, {"a": np.nan}), "others"),
])
def test_bad_numbers_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_check_is_json_and_summary_lists_verdicts():
    checks = [sc.steps_curve_check([1, 5], [0.5, 0.2]),
              sc.whitebox_beats_check(0.4, {"square": 0.1})]
    text = json.dumps([dataclasses.asdict(c) for c in checks])
    assert json.loads(text)[0]["passed"] is True
    lines = sc.summary(checks).splitlines()
    assert lines[0].startswith("PASS  steps_curve: ")
    assert lines[1].startswith("FAIL  whitebox_beats: ")
    assert lines[2] == "1/2 checks passed"


def test_default_eps_list_ends_at_the_box():
    assert sc.default_eps_list(PGD, (28, 28, 1)) == [0, 0.05, 0.1, 0.2, 1.0]
    l2 = sc.default_eps_list({"eps": 1.5, "norm": "2"}, (28, 28, 1))
    assert l2 == [0, 0.75, 1.5, 3.0, 28.0]


# --- gradient check ------------------------------------------------------

def test_gradient_check_passes_on_trained_cnn(cnn, data):
    check = sc.gradient_check(cnn, *data, batch_size=64)
    print(f"\n{check}")
    assert check.passed and "all-zero gradient 0.00%" in check.detail


@pytest.mark.parametrize("kind,match", [
    ("rounding", "(None)"),
    ("stop_gradient", "(None)"),
    ("nan", "non-finite 100.00%"),
    ("saturated", "all-zero gradient"),
])
def test_gradient_check_fails_on_masked_models(cnn, data, kind, match):
    model = {
        # feature squeezing (Xu et al. 2018): piecewise-constant input
        "rounding": lambda: _wrap(cnn, before=layers.BitDepthReduction(3)),
        "stop_gradient": lambda: _wrap(cnn, before=keras.layers.Lambda(
            keras.ops.stop_gradient)),
        "nan": lambda: _wrap(cnn, before=keras.layers.Lambda(
            lambda t: keras.ops.sqrt(t - 0.5))),
        # distillation-like saturated softmax (Carlini & Wagner 2016)
        "saturated": lambda: _wrap(cnn, after=keras.layers.Lambda(
            lambda z: 1e4 * z)),
    }[kind]()
    check = sc.gradient_check(model, *data)
    print(f"\n{kind}: {check.detail}")
    assert not check.passed and match in check.detail


def test_gradient_check_rejects_bad_arguments(cnn, data):
    with pytest.raises(ValueError, match="max_zero_fraction"):
        sc.gradient_check(cnn, *data, max_zero_fraction=2)
    with pytest.raises(ValueError, match="same number"):
        sc.gradient_check(cnn, data[0], data[1][:5])


# --- run_all -------------------------------------------------------------

def test_run_all_passes_on_natural_cnn(cnn, data):
    x, y = data[0][:100], data[1][:100]
    out = sc.run_all(cnn, x, y, PGD, steps_list=[1, 10, 20], others={
        "square": {"name": "square", "eps": 0.1, "steps": 100, "seed": 0}})
    print("\n" + sc.summary(out["checks"]))
    assert [c.name for c in out["checks"]] == [
        "eps_curve", "steps_curve", "whitebox_beats", "gradient"]
    assert all(c.passed for c in out["checks"])
    assert out["eps_curve"]["eps"] == [0, 0.05, 0.1, 0.2, 1.0]
    assert set(out["others"]) == {"fgsm", "square"}
    assert out["whitebox_acc"] == out["eps_curve"]["acc"][2]


def test_run_all_flags_a_saturated_softmax(cnn, data):
    """Logits x 1e4 keep every prediction but zero the CE gradient of
    confident examples: PGD stalls while gradient-free Square does not."""
    model = _wrap(cnn, after=keras.layers.Lambda(lambda z: 1e4 * z))
    x, y = data[0][:100], data[1][:100]
    out = sc.run_all(model, x, y, PGD, eps_list=[0, 0.1, 1.0],
                     steps_list=[1, 10], others={
        "square": {"name": "square", "eps": 0.1, "steps": 100, "seed": 0}})
    print("\n" + sc.summary(out["checks"]))
    verdict = {c.name: c.passed for c in out["checks"]}
    assert not verdict["whitebox_beats"] and not verdict["gradient"]
    if keras.backend.backend() == "tensorflow":
        # 0.24 left even at eps 1 (measured). Under JAX PGD reaches 0.04
        # there (measured; its random starts come from another generator),
        # so this verdict is not a property of the checks.
        assert not verdict["eps_curve"]
    assert out["others"]["square"] < out["whitebox_acc"] - 0.1


def test_run_all_stops_without_gradient_and_bpda_recovers(cnn, data):
    model = _wrap(cnn, before=layers.BitDepthReduction(4))
    x, y = data[0][:50], data[1][:50]
    out = sc.run_all(model, x, y, PGD)
    assert [c.name for c in out["checks"]] == ["gradient"]
    assert not out["checks"][0].passed and out["eps_curve"] is None
    out = sc.run_all(model, x, y, dict(PGD, bpda=True), eps_list=[0, 1.0],
                     steps_list=[1, 10])
    print("\n" + sc.summary(out["checks"]))
    assert all(c.passed for c in out["checks"])  # BPDA: no masking left
    with pytest.raises(ValueError, match="'eps'"):
        sc.run_all(cnn, x, y, {"name": "cw_l2"})
