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

from typing import Callable

import numpy as np
import tensorflow as tf

from attacks import primitives
from attacks._registry import register_attack

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


def dlr_loss(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Untargeted DLR loss (arXiv 2003.01690, Sec. 4, Eq. 6), `(batch,)`.

    `DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`, with
    `pi` sorting the logits in decreasing order. Invariant to shifting and
    rescaling the logits; larger is better for the attacker; > 0 iff the
    example is misclassified.

    Args:
        logits: float `(batch, classes)`, `classes >= 3`.
        y: int `(batch,)` true labels.
    """
    logits = tf.cast(logits, tf.float32)
    onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=tf.float32)
    z_y = tf.reduce_sum(onehot * logits, axis=-1)
    z_other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    top = tf.math.top_k(logits, k=3).values
    return -(z_y - z_other) / (top[:, 0] - top[:, 2] + _DLR_EPS)


def targeted_dlr_loss(logits: tf.Tensor, y_true: tf.Tensor,
                      target: tf.Tensor) -> tf.Tensor:
    """Targeted DLR loss (arXiv 2003.01690, Sec. 4), `(batch,)`.

    `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`, with `y` the true
    label and `t` the target; maximising it pushes `z_t` above `z_y`.

    Args:
        logits: float `(batch, classes)`, `classes >= 4`.
        y_true: int `(batch,)` true labels; target: int `(batch,)` targets.
    """
    logits = tf.cast(logits, tf.float32)
    z_y = tf.gather(logits, y_true, axis=1, batch_dims=1)
    z_t = tf.gather(logits, target, axis=1, batch_dims=1)
    top = tf.math.top_k(logits, k=4).values
    denom = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_EPS
    return -(z_y - z_t) / denom


def _objective(logits, y, y_true, loss, targeted):
    """The attacker's objective (larger is better for the attacker)."""
    if loss == "ce":
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            y, tf.cast(logits, tf.float32))
        return -ce if targeted else ce
    if targeted:
        return targeted_dlr_loss(logits, y_true, y)
    return dlr_loss(logits, y)


def _apgd_loop(model, x, y, y_true, x_start, eps, thresholds, steps,
               clip_min, clip_max, norm, targeted, loss):
    """Alg. 1 for `steps` iterations from `x_start`; returns the best point
    per example `(x_best, objective, success)` (success first, then loss)."""
    batch = tf.shape(x)[0]

    def proj(v):
        return tf.clip_by_value(x + primitives.project(v - x, eps, norm),
                                clip_min, clip_max)

    def evaluate(x_k):
        with tf.GradientTape() as tape:
            tape.watch(x_k)
            logits = primitives.call_model(model, x_k)
            obj = _objective(logits, y, y_true, loss, targeted)
            total = tf.reduce_sum(obj)
        grad = tape.gradient(total, x_k)
        return obj, grad, primitives.success(logits, y, targeted)

    x0 = proj(x_start)
    obj0, grad0, succ0 = evaluate(x0)
    eta = tf.fill([batch, 1, 1, 1], 2.0 * eps)
    x_cur = proj(x0 + eta * primitives.steepest_step(grad0, norm))
    x_prev = x0
    obj_prev = obj0
    # x_max / f_max: highest loss (restart point, condition 2); best: the
    # returned point (success first, then loss).
    x_max, f_max = x0, obj0
    best_x, best_obj, best_succ = x0, obj0, succ0
    f_max_last = obj0
    eta_last = eta
    count = tf.zeros([batch], tf.float32)
    for i in tf.range(1, steps + 1):
        obj, grad, succ = evaluate(x_cur)
        count += tf.cast(obj > obj_prev, tf.float32)
        up = obj > f_max
        x_max = primitives.select(up, x_cur, x_max)
        f_max = tf.where(up, obj, f_max)
        take = primitives.better(succ, obj, best_succ, best_obj)
        best_x = primitives.select(take, x_cur, best_x)
        best_obj = tf.where(take, obj, best_obj)
        best_succ = tf.where(take, succ, best_succ)

        thr = thresholds[i]
        is_ckpt = thr >= 0.0
        cond1 = count < thr
        same_eta = tf.equal(tf.reshape(eta, [-1]), tf.reshape(eta_last, [-1]))
        cond2 = tf.logical_and(same_eta, f_max <= f_max_last)
        reduce = tf.logical_and(is_ckpt, tf.logical_or(cond1, cond2))
        eta_last = tf.where(is_ckpt, eta, eta_last)
        f_max_last = tf.where(is_ckpt, f_max, f_max_last)
        count = tf.where(is_ckpt, tf.zeros_like(count), count)
        eta = primitives.select(reduce, eta * 0.5, eta)

        z = proj(x_cur + eta * primitives.steepest_step(grad, norm))
        x_next = proj(x_cur + ALPHA * (z - x_cur)
                      + (1.0 - ALPHA) * (x_cur - x_prev))
        x_prev = primitives.select(reduce, x_max, x_cur)
        x_cur = primitives.select(reduce, x_max, x_next)
        obj_prev = obj
    return best_x, best_obj, best_succ


_LOOP = tf.function(_apgd_loop, reduce_retracing=True)
_LOOP_XLA = tf.function(_apgd_loop, reduce_retracing=True, jit_compile=True)


def _apgd(model, x, y, *, eps, steps, norm, targeted, restarts, rho,
          clip_min, clip_max, seed, jit_compile, loss, y_true):
    primitives.validate(eps=eps, norm=norm, steps=steps, restarts=restarts,
                   clip_min=clip_min, clip_max=clip_max)
    if not (np.isfinite(rho) and 0.0 < rho <= 1.0):
        raise ValueError(f"rho must be a number in (0, 1]; got {rho!r}")
    primitives.check_inputs(x, y, clip_min, clip_max, targeted=targeted)
    x = tf.convert_to_tensor(x)
    in_dtype = x.dtype
    x32 = tf.cast(x, tf.float32)
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
        y = tf.argmax(logits, axis=-1, output_type=tf.int32)
    y = tf.cast(y, tf.int32)
    if targeted and loss == "dlr":
        if y_true is None:
            y_true = tf.argmax(logits, axis=-1, output_type=tf.int32)
        y_true = tf.cast(y_true, tf.int32)
    else:
        y_true = y  # unused by the objective
    eps_t = primitives.as_scalar(eps)
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    thr = tf.constant(_thresholds(int(steps), float(rho)))
    steps_t = tf.constant(int(steps), tf.int32)
    loop = _LOOP_XLA if jit_compile else _LOOP
    best = None
    for r in range(int(restarts)):
        x_start = primitives.random_in_ball(x32, eps_t, norm,
                                       primitives.seed_pair(seed, r))
        run = loop(model, x32, y, y_true, x_start, eps_t, thr, steps_t, lo,
                   hi, norm, bool(targeted), loss)
        best = primitives.keep_worst(best, run)
    return tf.cast(best[0], in_dtype)


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
        seed: int for reproducible random starts (uniform in the eps-ball);
            None draws from the global generator.
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
    x: tf.Tensor,
    y: tf.Tensor | None,
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
) -> tf.Tensor:
    return _apgd(model, x, y, eps=eps, steps=steps, norm=norm,
                 targeted=targeted, restarts=restarts, rho=rho,
                 clip_min=clip_min, clip_max=clip_max, seed=seed,
                 jit_compile=jit_compile, loss="ce", y_true=None)


@register_attack("apgd_dlr")
def apgd_dlr(
    model: Callable,
    x: tf.Tensor,
    y: tf.Tensor | None,
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
    y_true: tf.Tensor | None = None,
) -> tf.Tensor:
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
