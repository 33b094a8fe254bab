"""DeepFool: a minimum-norm untargeted attack.

Moosavi-Dezfooli, Fawzi, Frossard 2016, "DeepFool: a simple and accurate
method to fool deep neural networks", arXiv 1511.04599, Alg. 2 (multi-class)
and Sec. 3.3 / Eq. 10 (general l_p, here L-inf with the dual norm q = 1).

At each iteration the classifier is linearised around the current point. For
each candidate class `k != y` (the `num_classes` highest-scoring classes at
`x`), `w_k = grad(f_k - f_y)` and `f'_k = f_k - f_y`; the closest linearised
boundary is `l = argmin_k |f'_k| / ||w_k||_q` (q = 2 for L2, q = 1 for L-inf)
and the step that reaches it is

    L2:    r = |f'_l| / ||w_l||_2^2 * w_l
    L-inf: r = |f'_l| / ||w_l||_1   * sign(w_l).

Steps accumulate into `r_total`; an example stops once it is misclassified.
The iterate (and the result) is `clip(x + (1 + overshoot) * r_total)`.

Box handling (a documented deviation from the paper, which has no box):
gradient components that would push a pixel already at `clip_min` /
`clip_max` further out are zeroed before the distances and the step are
computed, and `r_total` is re-clipped after each step. Without this, images
with many saturated pixels (e.g. Fashion-MNIST background) approach the
boundary geometrically and never cross it. Where the box does not bind the
iteration is exactly Alg. 2.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from core import backends

_TINY = 1e-12
_NO_GRADIENT = (
    "the model's logits have no gradient with respect to x (a "
    "non-differentiable layer?); attack it through attacks.bpda.bpda")


def _validate(norm, steps, overshoot, num_classes, eps, clip_min, clip_max):
    if norm not in primitives.NORMS:
        raise ValueError(f"norm must be one of {primitives.NORMS}; got {norm!r}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    if (isinstance(overshoot, bool) or not np.isfinite(overshoot)
            or overshoot < 0):
        raise ValueError(
            f"overshoot must be a finite number >= 0; got {overshoot!r}")
    if (isinstance(num_classes, bool) or int(num_classes) != num_classes
            or num_classes < 2):
        raise ValueError(
            f"num_classes must be an integer >= 2; got {num_classes!r}")
    if eps is not None and not (np.isfinite(eps) and eps >= 0):
        raise ValueError(
            f"eps must be None or a finite number >= 0; got {eps!r}")
    primitives.check_box(clip_min, clip_max)


def _sum_over_pixels(v):
    """Sum over all axes after the first two: `(batch, k, ...) -> (batch, k)`."""
    return ops.sum(v, axis=tuple(range(2, len(v.shape))))


def _gather(v, index):
    """`v[b, index[b]]` per example (an exact gather on axis 1)."""
    index = ops.reshape(index, (-1,) + (1,) * (len(v.shape) - 1))
    return ops.take_along_axis(v, index, axis=1)[:, 0]


def _batch_jacobian(model, x_cur, idx):
    """`d logits[b, idx[b, j]] / d x_cur[b]`, float32 `(batch, n, ...)`
    for `idx` int `(batch, n)`: one gradient of the model run on `n` copies
    of the batch, copy `j` carrying the objective of column `j` (what
    TensorFlow's `GradientTape.batch_jacobian` gives for per-example
    models)."""
    n = ops.shape(idx)[1]
    rank = len(x_cur.shape)
    x_rep = ops.tile(x_cur, (n,) + (1,) * (rank - 1))  # (n * batch, ...)
    idx_rep = ops.reshape(ops.transpose(idx), (-1,))  # copy j: column j

    def objective(x_in):
        logits = ops.cast(primitives.call_model(model, x_in), "float32")
        return ops.sum(_gather(logits, idx_rep)), ()

    try:
        _, _, grad = backends.value_and_grad(objective, x_rep)
    except ValueError as err:  # TensorFlow: no gradient (while tracing)
        if "no gradient" not in str(err):
            raise
        raise ValueError(_NO_GRADIENT) from None
    grad = ops.reshape(grad, (n, -1) + tuple(ops.shape(x_cur)[1:]))
    return ops.transpose(grad, (1, 0) + tuple(range(2, rank + 1)))


def _step(model, x, idx, is_label, r_total, x_cur, picked, active, bounds,
          norm):
    """One DeepFool step: the box-aware linearisation at `x_cur` and the
    step to the nearest linearised boundary, added to `r_total` where
    `active`; returns the new `r_total`, consistent with the box."""
    scale, clip_min, clip_max = bounds
    jac = _batch_jacobian(model, x_cur, idx)  # (batch, 1 + K, ...)
    w = jac[:, 1:] - jac[:, :1]  # (batch, K, ...)
    # Box-aware linearisation: components that would push a pixel
    # already at a bound out of the box cannot move it; drop them.
    at_lo = ops.expand_dims(x_cur <= clip_min, 1)
    at_hi = ops.expand_dims(x_cur >= clip_max, 1)
    blocked = ops.logical_or(ops.logical_and(at_lo, w < 0),
                             ops.logical_and(at_hi, w > 0))
    w = ops.where(blocked, ops.zeros_like(w), w)
    f = picked[:, 1:] - picked[:, :1]  # (batch, K)
    if norm == "inf":
        w_dual = _sum_over_pixels(ops.abs(w))  # ||w||_1
    else:
        w_dual = ops.sqrt(_sum_over_pixels(ops.square(w)))  # ||w||_2
    dist = ops.abs(f) / (w_dual + _TINY)
    dist = ops.where(is_label, ops.full(ops.shape(dist), np.inf), dist)
    best = ops.cast(ops.argmin(dist, axis=1), "int32")
    w_l = _gather(w, best)  # (batch, ...)
    f_l = ops.abs(_gather(f, best))  # (batch,)
    n_l = _gather(w_dual, best)
    shape = (-1,) + (1,) * (len(x.shape) - 1)
    if norm == "inf":
        r = ops.reshape(f_l / (n_l + _TINY), shape) * ops.sign(w_l)
    else:
        r = ops.reshape(f_l / (ops.square(n_l) + _TINY), shape) * w_l
    r_total = r_total + primitives.select(active, r, ops.zeros_like(r))
    # Keep r_total consistent with the box (no hidden excess beyond it).
    return (ops.clip(x + scale * r_total, clip_min, clip_max) - x) / scale


def _deepfool_loop(model, x, y, cand, steps, overshoot, clip_min, clip_max,
                   *, norm):
    """Returns the accumulated perturbation `r_total` (before overshoot).
    One `keras.ops.while_loop` that stops once no example is active.

    The loop carries `scale * r_total` too, computed where `r_total` is:
    `x_cur = clip(x + scale * r_total)` then cannot become one fused
    multiply-add (as XLA would make it), whose different rounding decides
    differently whether a pixel the box clipped lies exactly on the bound
    (the box-aware step's test)."""
    idx = ops.concatenate([y[:, None], cand], axis=1)  # (batch, 1 + K)
    # Candidates equal to the label are not boundaries: masked out.
    is_label = ops.equal(cand, y[:, None])
    bounds = (1.0 + overshoot, clip_min, clip_max)

    def body(i, r_total, scaled, go):
        x_cur = ops.clip(x + scaled, clip_min, clip_max)
        logits = ops.cast(primitives.call_model(model, x_cur), "float32")
        picked = ops.take_along_axis(logits, idx, axis=1)  # (batch, 1 + K)
        active = ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"),
                           y)
        go = ops.any(active)
        r_total = ops.cond(go, lambda: _step(
            model, x, idx, is_label, r_total, x_cur, picked, active, bounds,
            norm), lambda: r_total)
        return i + 1, r_total, bounds[0] * r_total, go

    def cond(i, r_total, scaled, go):
        return ops.logical_and(i < steps, go)

    start = (ops.convert_to_tensor(0, "int32"), ops.zeros_like(x),
             ops.zeros_like(x), ops.convert_to_tensor(True))
    return backends.while_loop(model, cond, body, start)[1]


_STATIC = ("norm",)
_LOOP = backends.compile_fn(_deepfool_loop, static_argnames=_STATIC)
_LOOP_XLA = backends.compile_fn(_deepfool_loop, jit_compile=True,
                                static_argnames=_STATIC)


def _candidates(model, x32, y, num_classes):
    """The int32 labels `(batch,)` (the predictions when `y` is None) and
    the `num_classes` highest-scoring classes at `x32`, `(batch, K)`."""
    logits0 = ops.cast(primitives.call_model(model, x32), "float32")
    if y is None:
        y = ops.argmax(logits0, axis=-1)
    y = ops.cast(y, "int32")
    k = min(int(num_classes), int(logits0.shape[-1]))
    cand = ops.top_k(logits0, k=k)[1]
    return y, ops.cast(cand, "int32")


def _attack(model, x32, y, *, norm, steps, overshoot, num_classes, eps,
            clip_min, clip_max, jit_compile):
    """Runs the loop and applies the overshoot, the optional eps-ball and
    the box; returns the float32 `x_adv`."""
    y, cand = _candidates(model, x32, y, num_classes)
    over = primitives.as_scalar(overshoot)
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    loop = _LOOP_XLA if jit_compile else _LOOP
    r_total = loop(model, x32, y, cand,
                   ops.convert_to_tensor(int(steps), "int32"), over, lo, hi,
                   norm=norm)
    delta = (1.0 + over) * r_total
    if eps is not None:
        delta = primitives.project(delta, primitives.as_scalar(eps), norm)
    return ops.clip(x32 + delta, lo, hi)


@register_attack("deepfool")
def deepfool(
    model: Callable,
    x: Any,
    y: Any | None = None,
    *,
    norm: str = "2",
    steps: int = 50,
    overshoot: float = 0.02,
    num_classes: int = 10,
    eps: float | None = None,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int | None = None,
    jit_compile: bool = False,
) -> Any:
    """DeepFool (Moosavi-Dezfooli, Fawzi, Frossard 2016, arXiv 1511.04599,
    Alg. 2; L-inf via Sec. 3.3 / Eq. 10 with the L1 dual norm).

    A minimum-norm attack: it has no budget of its own and searches for the
    smallest perturbation (in the chosen norm) that crosses the nearest
    linearised decision boundary, iterating until each example is
    misclassified or `steps` run out.

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False`. Each example's logits
            must depend on that example only (per-example Jacobians).
        x: float `(batch, height, width, channels)` in `[clip_min, clip_max]`.
            Not modified.
        y: int `(batch,)` labels to move away from. None (the usual DeepFool
            usage) uses the model's predictions. Examples already
            misclassified w.r.t. `y` are returned unchanged.
        norm: "2" (L2, Alg. 2) or "inf" (L-inf, Eq. 10 with q = 1).
        steps: maximum number of linearisation steps, >= 1.
        overshoot: the final perturbation is `(1 + overshoot) * r_total`,
            pushing the point just past the boundary; >= 0.
        num_classes: number of candidate classes, the highest-scoring ones
            at `x` (the label is skipped if among them); capped at the
            number of logits.
        eps: None (default) leaves the attack unbounded. If given, the
            final perturbation `(1 + overshoot) * r_total` is projected onto
            the eps-ball of `norm` before clipping (it may then no longer
            cross the boundary).
        clip_min, clip_max: the valid box of pixel values; every iterate and
            the result are clipped to it.
        seed: unused (DeepFool is deterministic); accepted for the uniform
            attack API.
        jit_compile: compile the loop with XLA.

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box.

    Raises:
        ValueError: `norm` not in ("inf", "2"), `steps < 1`, `overshoot < 0`,
            `num_classes < 2`, `eps < 0`, `clip_min >= clip_max`, or `x`
            outside the box; the message names the value.

    Example:
        >>> x_adv = deepfool(model, x, steps=50, overshoot=0.02)
    """
    del seed  # deterministic
    _validate(norm, steps, overshoot, num_classes, eps, clip_min, clip_max)
    primitives.check_inputs(x, y, clip_min, clip_max)
    x = ops.convert_to_tensor(x)
    x_adv = _attack(model, ops.cast(x, "float32"), y, norm=norm, steps=steps,
                    overshoot=overshoot, num_classes=num_classes, eps=eps,
                    clip_min=clip_min, clip_max=clip_max,
                    jit_compile=jit_compile)
    return ops.cast(x_adv, x.dtype)
