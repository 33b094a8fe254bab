"""Sanity checks for gradient masking, as pass/fail `Check`s.

An evaluation whose numbers break one of these is measuring its attack's
failure, not the model's robustness (Athalye, Carlini, Wagner 2018, Sec.
3.1; Carlini et al. 2019, Sec. 5 checklist):

- `eps_curve_check`: a larger budget never raises accuracy, and accuracy
  reaches ~0 once the ball covers the pixel box ("unbounded attacks do not
  reach 100% success" is a sign of masking);
- `steps_curve_check`: more iterations never raise accuracy ("one-step /
  fewer-step attacks do better than iterative" is a sign of masking);
- `whitebox_beats_check`: the white-box attack does at least as well as
  transfer, single-step and gradient-free (SPSA, Square) attacks ("black-box
  attacks do better than white-box" is a sign of masking);
- `gradient_check`: the input gradient of the loss exists, is finite and
  is non-zero for every example (shattered / vanishing gradients).

The first three are pure functions of measured numbers; `gradient_check`
and `run_all` measure. Recipe used by evaluate.py: `run_all(model, x, y,
attack)` measures the curves (`evaluation.curves`), FGSM and any extra
`others`, runs the four checks and returns them with the numbers;
`summary(checks)` prints PASS/FAIL lines; `dataclasses.asdict(check)` goes
into the JSON report.

References:
    Athalye, Carlini, Wagner 2018, "Obfuscated Gradients Give a False Sense
    of Security", arXiv 1802.00420, Sec. 3.1 (identifying obfuscated
    gradients).
    Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry,
    Kurakin 2019, "On Evaluating Adversarial Robustness", arXiv 1902.06705,
    Sec. 5 (evaluation checklist).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from keras import ops

import attacks
from core import backends
from evaluation import curves


_NO_GRADIENT = "no gradient of the loss with respect to x"


@dataclasses.dataclass(frozen=True)
class Check:
    """One check's verdict: `name` (str), `passed` (bool) and a one-line
    `detail` with the numbers behind it; `dataclasses.asdict` gives JSON."""

    name: str
    passed: bool
    detail: str


def _accs(values: Sequence[float], name: str) -> list[float]:
    vals = [float(v) for v in values]
    if not vals or not all(0.0 <= v <= 1.0 for v in vals):
        raise ValueError(f"{name} must be accuracies in [0, 1]; got {values!r}")
    return vals


def _curve_check(name, key, grid, accs, tol, integer):
    grid = curves.check_grid(grid, f"{key}_list", integer=integer)
    accs = _accs(accs, "acc_list")
    if len(grid) != len(accs):
        raise ValueError(f"{key}_list and acc_list differ in length: "
                         f"{len(grid)} != {len(accs)}")
    # A point may not exceed the best (lowest) accuracy before it by > tol.
    rises = [f"{key}={g}: {a:.4f} > {min(accs[:i]):.4f}"
             for i, (g, a) in enumerate(zip(grid, accs))
             if i and a > min(accs[:i]) + tol]
    pairs = ", ".join(f"{g}: {a:.4f}" for g, a in zip(grid, accs))
    detail = f"acc by {key} {{{pairs}}}; " + (
        f"rises beyond tol {tol}: {'; '.join(rises)}" if rises
        else f"non-increasing within tol {tol}")
    return grid, accs, rises, detail


def eps_curve_check(eps_list: Sequence[float], acc_list: Sequence[float], *,
                    tol: float = 0.01, zero_tol: float = 0.05) -> Check:
    """Accuracy is non-increasing in eps (each point <= the lowest before it
    + `tol`) and <= `zero_tol` at the largest eps, which should cover the
    pixel box (Carlini et al. 2019, Sec. 5; Athalye et al. 2018, Sec. 3.1).

    Args:
        eps_list: strictly increasing budgets >= 0; acc_list: robust
            accuracies in [0, 1], one per eps.

    Raises:
        ValueError: unsorted or negative eps, accuracies outside [0, 1],
            or lists of different lengths.
    """
    grid, accs, rises, detail = _curve_check("eps_curve", "eps", eps_list,
                                             acc_list, tol, integer=False)
    zero = accs[-1] <= zero_tol
    detail += (f"; at the largest eps {grid[-1]}: {accs[-1]:.4f} "
               f"{'<=' if zero else '>'} zero_tol {zero_tol}")
    return Check("eps_curve", not rises and zero, detail)


def steps_curve_check(steps_list: Sequence[int], acc_list: Sequence[float],
                      tol: float = 0.01) -> Check:
    """More attack iterations never raise robust accuracy by more than
    `tol` (Xie et al. 2019, arXiv 1812.03411, Fig. 6; Athalye et al. 2018,
    Sec. 3.1). Raises ValueError as `eps_curve_check` (steps: ints >= 1)."""
    _, _, rises, detail = _curve_check("steps_curve", "steps", steps_list,
                                       acc_list, tol, integer=True)
    return Check("steps_curve", not rises, detail)


def whitebox_beats_check(whitebox_acc: float, others: Mapping[str, float],
                         tol: float = 0.01) -> Check:
    """White-box accuracy <= every other attack's (transfer, FGSM, SPSA,
    Square, random noise) + `tol` (Athalye et al. 2018, Sec. 3.1).

    Args:
        whitebox_acc: robust accuracy in [0, 1] under the white-box attack.
        others: `{attack name: robust accuracy in [0, 1]}`, at least one.

    Raises:
        ValueError: accuracies outside [0, 1] or empty `others`.
    """
    (wb,) = _accs([whitebox_acc], "whitebox_acc")
    if not isinstance(others, Mapping) or not others:
        raise ValueError(f"others must map attack names to accuracies; got "
                         f"{others!r}")
    accs = dict(zip(others, _accs(list(others.values()), "others")))
    worse = [f"{k}: {v:.4f}" for k, v in accs.items() if v + tol < wb]
    listed = ", ".join(f"{k}: {v:.4f}" for k, v in accs.items())
    detail = (f"white-box {wb:.4f}; others {{{listed}}}; " + (
        f"beat white-box by more than tol {tol}: {', '.join(worse)}" if worse
        else f"none beats white-box by more than tol {tol}"))
    return Check("whitebox_beats", not worse, detail)


def _input_gradient(model: Callable, x: np.ndarray, y: np.ndarray
                    ) -> tuple[np.ndarray | None, str]:
    """The input gradient of the summed cross-entropy at one batch (numpy),
    or None and why (TensorFlow: no gradient reaches `x`)."""

    def objective(xb):
        out = ops.cast(curves.logits(model, xb), "float32")
        return ops.sum(ops.sparse_categorical_crossentropy(
            y, out, from_logits=True)), None

    try:
        _, _, grad = backends.value_and_grad(objective, x)
    except LookupError as e:  # an op without a registered gradient
        return None, f" ({e})"
    except ValueError as e:  # TensorFlow: no gradient reaches x
        if "no gradient" not in str(e):
            raise
        return None, ""
    return ops.convert_to_numpy(grad), ""


def _no_gradient(why: str) -> Check:
    return Check("gradient", False, (
        f"{_NO_GRADIENT} (None){why}: a "
        "non-differentiable or stop_gradient layer; attack through "
        "BPDA (attacks.bpda, evaluate.py --bpda)"))


def gradient_check(model: Callable, x: Any, y: Any, *, batch_size: int = 500,
                   max_zero_fraction: float = 0.0) -> Check:
    """Measures the input gradient of the cross-entropy loss per example.

    Fails when the gradient is None (a non-differentiable or stop_gradient
    layer: attack through `attacks.bpda`, Athalye et al. 2018, Sec. 4.1;
    under JAX, which differentiates such layers to zeros: when every
    example's gradient is all-zero),
    when any example's gradient is non-finite, or when more than
    `max_zero_fraction` of the examples have an all-zero gradient
    (shattered or vanishing gradients, Athalye et al. 2018, Sec. 3;
    a saturated softmax, Carlini et al. 2019, Sec. 5).

    Args:
        model: `x` -> logits `(batch, classes)`, training=False.
        x: float `(n, height, width, channels)` in [0, 1]; y: int `(n,)`.
        batch_size: examples per gradient call, >= 1.
        max_zero_fraction: tolerated fraction in [0, 1] of all-zero rows.

    Returns:
        `Check("gradient", ...)`, the detail giving the zero and non-finite
        fractions and the median per-example L1 norm of the gradient.

    Raises:
        ValueError: bad `x`/`y`, `batch_size` or `max_zero_fraction`.
    """
    x, y = curves.check_arrays(x, y)
    batch_size = curves.check_batch_size(batch_size)
    if not 0.0 <= max_zero_fraction <= 1.0:
        raise ValueError(f"max_zero_fraction must be in [0, 1]; got "
                         f"{max_zero_fraction!r}")
    norms = []
    for i in range(0, len(x), batch_size):
        grad, why = _input_gradient(model, x[i:i + batch_size],
                                    y[i:i + batch_size])
        if grad is None:
            return _no_gradient(why)
        norms.append(np.abs(grad.reshape(len(grad), -1)).sum(axis=1))
    norms = np.concatenate(norms)
    if backends.BACKEND != "tensorflow" and not np.any(norms):
        # JAX differentiates a non-differentiable or stop_gradient layer
        # to zeros where TensorFlow has no gradient at all
        return _no_gradient(f" (all-zero for every example under "
                            f"{backends.BACKEND})")
    nonfinite = float(np.mean(~np.isfinite(norms)))
    zero = float(np.mean(norms == 0))
    median = np.median(norms[np.isfinite(norms)]) if nonfinite < 1 else math.nan
    passed = nonfinite == 0 and zero <= max_zero_fraction
    return Check("gradient", passed, (
        f"{len(norms)} examples: all-zero gradient {zero:.2%} (allowed "
        f"{max_zero_fraction:.2%}), non-finite {nonfinite:.2%}, median "
        f"|grad|_1 {median:.4g}"))


def default_eps_list(attack_config: Mapping[str, Any],
                     image_shape: Sequence[int]) -> list[float]:
    """`[0, eps/2, eps, 2 eps, box]`, where `box` is the smallest budget
    whose ball covers the whole [0, 1] box (1 for L-inf, sqrt(height *
    width * channels) for L2), where every example can be misclassified."""
    eps = float(attack_config["eps"])
    norm = str(attack_config.get("norm", "inf"))
    box = 1.0 if norm == "inf" else math.sqrt(math.prod(image_shape))
    return sorted({0.0, eps / 2, eps, min(2 * eps, box), box})


def run_all(model: Callable, x: Any, y: Any, attack_config: Mapping[str, Any],
            *, eps_list: Sequence[float] | None = None,
            steps_list: Sequence[int] | None = None,
            others: Mapping[str, Mapping | Callable] | None = None,
            batch_size: int = 500, seed: int = 0,
            strategy: Any | None = None, tol: float = 0.01,
            zero_tol: float = 0.05) -> dict[str, Any]:
    """Measures everything and runs the four checks.

    Args:
        model, x, y: as `gradient_check`; attack_config: the white-box
            attack with an eps-ball (e.g. PGD; `"bpda": True` checks the
            gradient of the straight-through copy).
        eps_list: default `default_eps_list`; steps_list: default
            `[1, steps, 4 * steps]` (skipped for attacks without `steps`).
        others: `{name: attack config or bound fn(model, x, y)}`, e.g.
            `attacks.transfer(...)`, SPSA or Square configs; FGSM (FGM for
            L2) at the config's eps is always added.
        batch_size, seed, strategy: as `curves.accuracy_vs_eps`.
        tol, zero_tol: tolerances of the curve checks.

    Returns:
        dict: `checks` (list of `Check`: eps_curve, steps_curve, if the
        attack takes `steps`, whitebox_beats, gradient), `eps_curve`,
        `steps_curve` (or None), `whitebox_acc`, `others` (`{name: robust
        accuracy}`). When the model has no input gradient (None) nothing
        else is measured (gradient attacks would raise): `checks` is the
        failed gradient check alone and the rest None / empty.

    Raises:
        ValueError / KeyError / TypeError: as the functions it calls.
    """
    cfg = dict(attack_config)
    if "name" not in cfg or cfg.get("eps") is None:
        raise ValueError(f"attack_config needs a 'name' and an 'eps' (an "
                         f"eps-ball attack); got {cfg!r}")
    kw = dict(batch_size=batch_size, seed=seed, strategy=strategy)
    # With BPDA the attack differentiates the straight-through copy.
    grad = gradient_check(attacks.with_straight_through(model)
                          if cfg.get("bpda") else model, x, y,
                          batch_size=batch_size)
    if grad.detail.startswith(_NO_GRADIENT):  # gradient attacks would raise
        return {"checks": [grad], "eps_curve": None, "steps_curve": None,
                "whitebox_acc": None, "others": {}}
    if eps_list is None:
        eps_list = default_eps_list(cfg, np.shape(x)[1:])
    eps_curve = curves.accuracy_vs_eps(model, x, y, cfg, eps_list, **kw)
    steps_curve = None
    if "steps" in cfg:
        if steps_list is None:
            steps_list = sorted({1, cfg["steps"], 4 * cfg["steps"]})
        steps_curve = curves.accuracy_vs_steps(model, x, y, cfg, steps_list,
                                               **kw)
    if cfg["eps"] in eps_curve["eps"]:
        whitebox = eps_curve["acc"][eps_curve["eps"].index(cfg["eps"])]
    else:
        whitebox = curves.measure(model, x, y, cfg, **kw)["robust_acc"]
    single = "fgsm" if cfg.get("norm", "inf") == "inf" else "fgm"
    same = {k: cfg[k] for k in ("targeted", "loss", "bpda") if k in cfg}
    measured = {single: {"name": single, "eps": cfg["eps"], **same},
                **(others or {})}
    accs = {k: curves.measure(model, x, y, v, **kw)["robust_acc"]
            for k, v in measured.items()}
    checks = [eps_curve_check(eps_curve["eps"], eps_curve["acc"], tol=tol,
                              zero_tol=zero_tol)]
    if steps_curve:
        checks.append(steps_curve_check(steps_curve["steps"],
                                        steps_curve["acc"], tol))
    checks += [whitebox_beats_check(whitebox, accs, tol), grad]
    return {"checks": checks, "eps_curve": eps_curve,
            "steps_curve": steps_curve, "whitebox_acc": whitebox,
            "others": accs}


def summary(checks: Sequence[Check]) -> str:
    """One `PASS name: detail` / `FAIL name: detail` line per check and a
    final `k/n checks passed` line."""
    lines = [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}"
             for c in checks]
    passed = sum(bool(c.passed) for c in checks)
    return "\n".join(lines + [f"{passed}/{len(checks)} checks passed"])


__all__ = ["Check", "default_eps_list", "eps_curve_check", "gradient_check",
           "run_all", "steps_curve_check", "summary", "whitebox_beats_check"]
