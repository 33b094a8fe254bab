"""Auto-PGD (APGD): PGD with momentum and an adaptive, per-example step size.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", arXiv 2003.01690, Sec. 3,
Algorithm 1; the DLR loss is Sec. 4, Eq. 6 (untargeted) and its targeted
version (Sec. 4, "targeted DLR").

The iteration (Alg. 1), with `P` the projection onto the eps-ball and the box
and `d(g)` the steepest-ascent direction (`sign(g)` for L-inf, `g / ||g||_2`
for L2):

    x_1     = P(x_0 + eta * d(grad f(x_0))),             eta_0 = 2 * eps
    z       = P(x_k + eta * d(grad f(x_k)))
    x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1})), alpha=0.75

At the checkpoints `w_j = ceil(p_j * N)` with `p_0 = 0`, `p_1 = 0.22`,
`p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`, an example halves its step
size and restarts from its best point `x_max` if

    1. the loss increased in fewer than `rho * (w_j - w_{j-1})` of the steps
       since the previous checkpoint, or
    2. its step size and its best loss are both unchanged since the previous
       checkpoint.

On restart the momentum is also reset (`x_{k-1} := x_max`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from core import backends

ALPHA = 0.75  # the momentum weight of Alg. 1
_DLR_EPS = 1e-12


def checkpoints(steps: int) -> list[int]:
    """The checkpoint iterations `w_j = ceil(p_j * steps)` of Alg. 1.

    `p_0 = 0`, `p_1 = 0.22`, `p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
    0.06)`, for all `p_j <= 1`. Computed exactly in hundredths, so e.g.
    `p_3 = 0.57` gives `w_3 = 57` for 100 steps (floating point would give
    58). Duplicates are dropped.

    Returns:
        Increasing ints, starting with 0; for `steps=100`:
        `[0, 22, 41, 57, 70, 80, 87, 93, 99]`.
    """
    p = [0, 22]  # hundredths
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 3, 6)
        if nxt > 100:
            break
        p.append(nxt)
    out: list[int] = []
    for pj in p:
        w = -(-pj * int(steps) // 100)  # exact ceil
        if not out or w > out[-1]:
            out.append(w)
    return out


def _thresholds(steps: int, rho: float) -> np.ndarray:
    """float32 `(steps + 1,)`: at a checkpoint `w_j >= 1` (and `< steps`),
    `rho * (w_j - w_{j-1})` (condition 1's bound); -1 elsewhere."""
    thr = np.full(steps + 1, -1.0, np.float32)
    w = checkpoints(steps)
    for prev, cur in zip(w[:-1], w[1:]):
        if 1 <= cur < steps:
            thr[cur] = rho * (cur - prev)
    return thr


def dlr_loss(logits: Any, y: Any) -> Any:
    """Untargeted DLR loss (arXiv 2003.01690, Sec. 4, Eq. 6), `(batch,)`.

    `DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`, with
    `pi` sorting the logits in decreasing order. Invariant to shifting and
    rescaling the logits; larger is better for the attacker; > 0 iff the
    example is misclassified.

    Args:
        logits: float `(batch, classes)`, `classes >= 3`.
        y: int `(batch,)` true labels.
    """
    logits = ops.cast(logits, "float32")
    z_y, z_other = primitives.logit_margins(logits, y)
    top = ops.top_k(logits, k=3)[0]
    return -(z_y - z_other) / (top[:, 0] - top[:, 2] + _DLR_EPS)


def _pick(logits, labels):
    """`logits[b, labels[b]]` per example, `(batch,)` (an exact gather)."""
    idx = ops.expand_dims(ops.cast(labels, "int32"), -1)
    return ops.take_along_axis(logits, idx, axis=1)[:, 0]


def targeted_dlr_loss(logits: Any, y_true: Any, target: Any) -> Any:
    """Targeted DLR loss (arXiv 2003.01690, Sec. 4), `(batch,)`.

    `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`, with `y` the true
    label and `t` the target; maximising it pushes `z_t` above `z_y`.

    Args:
        logits: float `(batch, classes)`, `classes >= 4`.
        y_true: int `(batch,)` true labels; target: int `(batch,)` targets.
    """
    logits = ops.cast(logits, "float32")
    z_y = _pick(logits, y_true)
    z_t = _pick(logits, target)
    top = ops.top_k(logits, k=4)[0]
    denom = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_EPS
    return -(z_y - z_t) / denom


def _objective(logits, y, y_true, loss, targeted):
    """The attacker's objective (larger is better for the attacker)."""
    if loss == "ce":
        # float32 also where Keras computes it wider (JAX with x64 enabled).
        ce = ops.cast(primitives.per_example_loss(logits, y, "ce"), "float32")
        return -ce if targeted else ce
    if targeted:
        return targeted_dlr_loss(logits, y_true, y)
    return dlr_loss(logits, y)


def _track(c, obj, succ):
    """Counts the loss increases and updates the highest-loss point
    (`x_max`, `f_max`) and the returned best point with iterate `x_cur`."""
    x_cur = c["x_cur"]
    c["count"] = c["count"] + ops.cast(obj > c["obj_prev"], "float32")
    up = obj > c["f_max"]
    c["x_max"] = primitives.select(up, x_cur, c["x_max"])
    c["f_max"] = ops.where(up, obj, c["f_max"])
    take = primitives.better(succ, obj, c["best_succ"], c["best_obj"])
    c["best_x"] = primitives.select(take, x_cur, c["best_x"])
    c["best_obj"] = ops.where(take, obj, c["best_obj"])
    c["best_succ"] = ops.where(take, succ, c["best_succ"])


def _checkpoint(c, thr):
    """At a checkpoint (`thr >= 0`), halves the step size of the examples
    that meet condition 1 or 2; returns the bool `(batch,)` of those."""
    is_ckpt = thr >= 0.0
    cond1 = c["count"] < thr
    same_eta = ops.equal(ops.reshape(c["eta"], (-1,)),
                         ops.reshape(c["eta_last"], (-1,)))
    cond2 = ops.logical_and(same_eta, c["f_max"] <= c["f_max_last"])
    reduce = ops.logical_and(is_ckpt, ops.logical_or(cond1, cond2))
    c["eta_last"] = ops.where(is_ckpt, c["eta"], c["eta_last"])
    c["f_max_last"] = ops.where(is_ckpt, c["f_max"], c["f_max_last"])
    c["count"] = ops.where(is_ckpt, ops.zeros_like(c["count"]), c["count"])
    c["eta"] = primitives.select(reduce, c["eta"] * 0.5, c["eta"])
    return reduce


def _apgd_loop(model, x, y, y_true, x_start, eps, thresholds, steps,
               clip_min, clip_max, *, norm, targeted, loss):
    """Alg. 1 for `steps` iterations from `x_start` (one
    `keras.ops.fori_loop`); returns the best point per example `(x_best,
    objective, success)` (success first, then loss)."""
    batch = ops.shape(x)[0]

    def proj(v):
        return ops.clip(x + primitives.project(v - x, eps, norm), clip_min,
                        clip_max)

    def objective(x_k):
        logits = primitives.call_model(model, x_k)
        obj = _objective(logits, y, y_true, loss, targeted)
        return ops.sum(obj), (obj, logits)

    def evaluate(x_k):
        _, (obj, logits), grad = backends.value_and_grad(objective, x_k)
        return obj, grad, primitives.success(logits, y, targeted)

    def body(i, c):
        c = dict(c)
        obj, grad, succ = evaluate(c["x_cur"])
        _track(c, obj, succ)
        reduce = _checkpoint(c, thresholds[i])
        x_cur, x_prev = c["x_cur"], c["x_prev"]
        z = proj(x_cur + c["eta"] * primitives.steepest_step(grad, norm))
        x_next = proj(x_cur + ALPHA * (z - x_cur)
                      + (1.0 - ALPHA) * (x_cur - x_prev))
        c["x_prev"] = primitives.select(reduce, c["x_max"], x_cur)
        c["x_cur"] = primitives.select(reduce, c["x_max"], x_next)
        c["obj_prev"] = obj
        return c

    x0 = proj(x_start)
    obj0, grad0, succ0 = evaluate(x0)
    eta = ops.full((batch, 1, 1, 1), 2.0 * eps)
    # x_max / f_max: highest loss (restart point, condition 2); best: the
    # returned point (success first, then loss).
    init = dict(
        x_cur=proj(x0 + eta * primitives.steepest_step(grad0, norm)),
        x_prev=x0, obj_prev=obj0, x_max=x0, f_max=obj0, best_x=x0,
        best_obj=obj0, best_succ=succ0, f_max_last=obj0, eta_last=eta,
        eta=eta, count=ops.zeros((batch,), "float32"))
    c = backends.fori_loop(model, 1, steps + 1, body, init)
    return c["best_x"], c["best_obj"], c["best_succ"]


_STATIC = ("norm", "targeted", "loss")
_LOOP = backends.compile_fn(_apgd_loop, static_argnames=_STATIC)
_LOOP_XLA = backends.compile_fn(_apgd_loop, jit_compile=True,
                                static_argnames=_STATIC)


def _apgd(model, x, y, *, eps, steps, norm, targeted, restarts, rho,
          clip_min, clip_max, seed, jit_compile, loss, y_true):
    primitives.validate(eps=eps, norm=norm, steps=steps, restarts=restarts,
                   clip_min=clip_min, clip_max=clip_max)
    if not (np.isfinite(rho) and 0.0 < rho <= 1.0):
        raise ValueError(f"rho must be a number in (0, 1]; got {rho!r}")
    primitives.check_inputs(x, y, clip_min, clip_max, targeted=targeted)
    x = ops.convert_to_tensor(x)
    in_dtype = x.dtype
    x32 = ops.cast(x, "float32")
    need_logits = y is None or loss == "dlr"
    logits = primitives.call_model(model, x32) if need_logits else None
    if loss == "dlr":
        classes = int(logits.shape[-1])
        need = 4 if targeted else 3
        if classes < need:
            raise ValueError(
                f"{'targeted ' if targeted else ''}DLR needs >= {need} "
                f"classes; the model has {classes}")
    if y is None:
        y = ops.argmax(logits, axis=-1)
    y = ops.cast(y, "int32")
    if targeted and loss == "dlr":
        if y_true is None:
            y_true = ops.argmax(logits, axis=-1)
        y_true = ops.cast(y_true, "int32")
    else:
        y_true = y  # unused by the objective
    eps_t = primitives.as_scalar(eps)
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    thr = ops.convert_to_tensor(_thresholds(int(steps), float(rho)))
    steps_t = ops.convert_to_tensor(int(steps), "int32")
    loop = _LOOP_XLA if jit_compile else _LOOP
    best = None
    for r in range(int(restarts)):
        x_start = primitives.random_in_ball(x32, eps_t, norm,
                                       primitives.seed_pair(seed, r))
        run = loop(model, x32, y, y_true, x_start, eps_t, thr, steps_t, lo,
                   hi, norm=norm, targeted=bool(targeted), loss=loss)
        best = primitives.keep_worst(best, run)
    return ops.cast(best[0], in_dtype)


_DOC = """APGD-{name} (Croce & Hein 2020, arXiv 2003.01690, Alg. 1{ref}).

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False`. Logits, never
            probabilities.{classes}
        x: float `(batch, height, width, channels)` in `[clip_min, clip_max]`
            (default `[0, 1]`). Not modified.
        y: int `(batch,)`: true labels (untargeted) or target labels
            (`targeted=True`, required then). None (untargeted only) uses the
            model's predictions.
        eps: radius of the threat model's ball on the pixel scale of `x`,
            >= 0. The initial step size is `2 * eps`.
        steps: iterations `N_iter`, >= 1 (one gradient per iteration).
        norm: "inf" (sign steps) or "2" (normalised-gradient steps; the
            iterate is projected onto the L2 ball, then clipped to the box).
        targeted: {targeted_doc}
        restarts: independent runs from random starts (seeds `(seed, r)`);
            per example the worst case for the model is kept.
        rho: condition 1's fraction of loss-increasing steps, in (0, 1].
        clip_min, clip_max: the valid box of pixel values.
        seed: int for reproducible random starts (uniform in the eps-ball),
            or a `keras.random.SeedGenerator` (which a compiled training
            step under JAX must pass); None draws from the global
            generator (eager only under JAX).
        jit_compile: compile the loop with XLA.{y_true_doc}

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box and with
        `||x_adv - x||_norm <= eps` (float tolerance): per example the best
        iterate of all runs (the random start included), preferring points
        where the attack succeeds, then higher loss.

    Raises:
        ValueError: `norm` not in ("inf", "2"), `eps < 0`, `steps < 1`,
            `restarts < 1`, `rho` outside (0, 1], `x` outside the box,
            `targeted=True` with `y=None`{raises_extra}.

    References:
        Croce & Hein 2020, arXiv 2003.01690: Sec. 3.2 and Alg. 1 (step size,
        momentum, checkpoints){ref2}.
    """


@register_attack("apgd_ce")
def apgd_ce(
    model: Callable,
    x: Any,
    y: Any | None,
    *,
    eps: float,
    steps: int = 100,
    norm: str = "inf",
    targeted: bool = False,
    restarts: int = 1,
    rho: float = 0.75,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int | None = None,
    jit_compile: bool = False,
) -> Any:
    return _apgd(model, x, y, eps=eps, steps=steps, norm=norm,
                 targeted=targeted, restarts=restarts, rho=rho,
                 clip_min=clip_min, clip_max=clip_max, seed=seed,
                 jit_compile=jit_compile, loss="ce", y_true=None)


@register_attack("apgd_dlr")
def apgd_dlr(
    model: Callable,
    x: Any,
    y: Any | None,
    *,
    eps: float,
    steps: int = 100,
    norm: str = "inf",
    targeted: bool = False,
    restarts: int = 1,
    rho: float = 0.75,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int | None = None,
    jit_compile: bool = False,
    y_true: Any | None = None,
) -> Any:
    return _apgd(model, x, y, eps=eps, steps=steps, norm=norm,
                 targeted=targeted, restarts=restarts, rho=rho,
                 clip_min=clip_min, clip_max=clip_max, seed=seed,
                 jit_compile=jit_compile, loss="dlr", y_true=y_true)


apgd_ce.__doc__ = _DOC.format(
    name="CE", ref="", classes="",
    targeted_doc="minimise the cross-entropy of the target `y`.",
    y_true_doc="", raises_extra="", ref2="")
apgd_dlr.__doc__ = _DOC.format(
    name="DLR", ref="; DLR loss Sec. 4, Eq. 6",
    classes=" Needs >= 3 classes (>= 4 targeted).",
    targeted_doc=("maximise the targeted DLR loss "
                  "`-(z_ytrue - z_y) / (z_pi1 - (z_pi3 + z_pi4)/2)`, "
                  "`y` holding the targets."),
    y_true_doc=("\n        y_true: int `(batch,)` true labels, used only by "
                "the targeted DLR\n            loss; None uses the model's "
                "predictions on `x`. Ignored when\n            untargeted."),
    raises_extra=", or too few classes for DLR",
    ref2="; Sec. 4, Eq. 6 and the targeted DLR (loss)")
