"""Carlini-Wagner L0 attack (Carlini & Wagner 2017, "Towards Evaluating the
Robustness of Neural Networks", arXiv 1608.04644, Sec. V.B).

The L0 distance (the number of changed pixels) is not differentiable, so
the paper shrinks, iteratively, the set of pixels the attack may change,
using the L2 attack (Sec. V.A, `attacks.cw`) to decide which pixels matter:

1. The allowed set starts as every pixel (a pixel = all channels at one
   location).
2. Run the L2 attack restricted to the allowed set: minimise over `w`

       ||x' - x||_2^2 + c * f(x'),
       x' = x outside the set,  lo + (hi - lo) * (tanh(w) + 1) / 2 inside,

   with the margin loss f_6 of the L2 attack (targeted: `max(max_{i != t}
   Z_i - Z_t, -kappa)`, untargeted: `max(Z_y - max_{i != y} Z_i, -kappa)`),
   by Adam for at most `steps` iterations, stopping at the first
   adversarial iterate (margin >= kappa).
3. If it succeeds with `x' = x + delta`, that point is recorded, and with
   `g = grad_x gap(x')` (the unclipped margin: f itself is flat at a
   successful point) each allowed pixel `i` gets the score
   `sum_channels |g_i * delta_i|`, the first-order change of the margin if
   the pixel were reset to `x`. The pixels with the smallest scores leave
   the set, and the next solve is warm-started at `x'`.
   If it fails, `c` is doubled and the solve repeated on the same set,
   until `c > c_max`: then the example is finished.

The result is the last successful point, which has the fewest changed
pixels.

Removal rule (the paper removes one pixel per round, which costs one L2
solve per pixel): every round removes (a) all allowed pixels the L2 attack
left (almost) unchanged, `max_channels |delta_i| < 1e-4 * (hi - lo)` (they
are also reset to `x` in the recorded point when it stays adversarial), and
(b) `max(1, floor(prune_fraction * n))` pixels of smallest score, `n`
being the allowed pixels left after (a): about `log(n_final / n_0) /
log(1 - prune_fraction)` rounds in all, and single pixels at the end.
Measured on the Fashion-MNIST test CNN (25 images, `cw_l0`'s defaults
otherwise): `prune_fraction` 0.1 gave 100% success, median 11 changed
pixels (max 38) in 27 s; 0.2 with 30-step solves at learning rate 0.1 and
`c_max` 20: median 11 (max 44) in 7 s.

Other choices, made for the short Adam budgets used here:
- The score uses magnitudes `|g_i * delta_i|`: the paper writes `argmin
  g_i * delta_i`, but `delta` was found by descending `f`, so the signed
  product is most negative for the most useful pixel.
- `c` is kept after a success, doubled after a failure (the paper's
  doubling), and the retry continues from the failed solve's last iterate
  (the paper restarts it from the last success): a retry adds Adam steps
  instead of repeating them.
- Pixels at exactly `clip_min` or `clip_max` cannot move in tanh space
  (`tanh'` is ~1e-6 there); like the paper's attack this one effectively
  changes only pixels strictly inside the box (on Fashion-MNIST the black
  background is not used).

Everything is batched over the examples still running; each L2 solve is one
compiled function (`backends.compile_fn`) with the masks and per-example
`c` as tensors.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from attacks.cw import _for_compile, _value_and_grad, adam_update
from core import backends

# A pixel whose largest channel change is below this fraction of the box is
# "unchanged" (the tanh round trip alone moves pixels by ~1e-7).
_NEGLIGIBLE = 1e-4


def _gap(logits, y, targeted):
    """The attacker's signed margin, < 0 where the attack succeeds."""
    z_y, z_other = primitives.logit_margins(logits, y)
    return (z_other - z_y) if targeted else (z_y - z_other)


def _succeeded(logits, y, gap, kappa, targeted):
    pred = ops.cast(ops.argmax(logits, axis=-1), "int32")
    hit = ops.equal(pred, y) if targeted else ops.not_equal(pred, y)
    return ops.logical_and(hit, -gap >= kappa)


def _l0_solve(model, x, y, w0, mask, const, lr, steps, lo, hi, kappa, *,
              targeted):
    """The L2 attack restricted to `mask` (`(batch, H, W, 1)`, 1 = allowed)
    for a fixed `const` per example.

    Runs Adam from `w0` until every example has an adversarial iterate or
    `steps` steps were taken (one `keras.ops.while_loop`); an example stops
    moving at its first success.

    Returns:
        solved: bool `(batch,)`;
        x_sol, w_sol: the successful iterate (`x` / `w0` where unsolved);
        w_end: the last iterate, the warm start of a retry.
    """
    batch = ops.shape(x)[0]
    allowed = mask > 0.5

    def objective(w):
        x_adv = ops.where(allowed, primitives.from_tanh_space(w, lo, hi), x)
        l2sq = ops.sum(ops.square(x_adv - x), axis=(1, 2, 3))
        logits = primitives.call_model(model, x_adv)
        gap = _gap(logits, y, targeted)
        total = ops.sum(l2sq + const * ops.maximum(gap, -kappa))
        return total, (x_adv, logits, gap)

    # Iterates 0 .. steps are evaluated (the last one after `steps` steps).
    def cond(i, w, m, v, x_sol, w_sol, solved):
        return ops.logical_and(i <= steps,
                               ops.logical_not(ops.all(solved)))

    def body(i, w, m, v, x_sol, w_sol, solved):
        _, (x_adv, logits, gap), grad = _value_and_grad(objective, w)
        new = ops.logical_and(_succeeded(logits, y, gap, kappa, targeted),
                              ops.logical_not(solved))
        x_sol = primitives.select(new, x_adv, x_sol)
        w_sol = primitives.select(new, w, w_sol)
        solved = ops.logical_or(solved, new)
        step, m, v = adam_update(w, m, v, grad, i, lr)
        w = primitives.select(solved, w, w - step)
        return i + 1, w, m, v, x_sol, w_sol, solved

    init = (ops.convert_to_tensor(0, "int32"), w0, ops.zeros_like(w0),
            ops.zeros_like(w0), x, w0, ops.zeros((batch,), "bool"))
    _, w, _, _, x_sol, w_sol, solved = backends.while_loop(model, cond, body, init)
    return solved, x_sol, w_sol, w


def _inspect(model, x_sol, y, kappa, *, targeted):
    """`(success, d gap / d x)` at `x_sol`."""

    def objective(x_in):
        logits = primitives.call_model(model, x_in)
        gap = _gap(logits, y, targeted)
        return ops.sum(gap), (logits, gap)

    _, (logits, gap), grad = _value_and_grad(objective, x_sol)
    return _succeeded(logits, y, gap, kappa, targeted), grad


_STATIC = ("targeted",)
_SOLVE = backends.compile_fn(_l0_solve, static_argnames=_STATIC)
_SOLVE_XLA = backends.compile_fn(_l0_solve, jit_compile=True,
                                 static_argnames=_STATIC)
_INSPECT = backends.compile_fn(_inspect, static_argnames=_STATIC)


def _check_args(confidence, c_init, c_max, steps, learning_rate,
                prune_fraction, max_rounds):
    """Raises ValueError for a bad scalar argument of `cw_l0`."""
    primitives.check_number("confidence", confidence, positive=False)
    primitives.check_c_range(c_init, c_max)
    primitives.check_int("steps", steps)
    primitives.check_number("learning_rate", learning_rate, positive=True)
    primitives.check_number("prune_fraction", prune_fraction, positive=True)
    if not prune_fraction < 1:
        raise ValueError(
            f"prune_fraction must be in (0, 1); got {prune_fraction!r}")
    primitives.check_int("max_rounds", max_rounds)


def _record(model, x_np, y, ok, sol, negligible, kappa, targeted, best_x,
            best_count):
    """Records the successful points `sol` of the examples `ok` in `best_x`
    and `best_count` (in place) where they change fewer pixels, negligible
    changes reset to `x` where the point stays adversarial.

    Returns:
        moved: bool `(len(ok), H, W, 1)`, the pixels the solve changed;
        score: `(len(ok), H, W)`, `sum_channels |g_i * delta_i|`.
    """
    delta = sol - x_np[ok]
    moved = np.max(np.abs(delta), axis=-1, keepdims=True) >= negligible
    # Record the point, negligible changes reset to x where it stays
    # adversarial; the gradient at the point scores the pixels.
    clean = np.where(moved, sol, x_np[ok])
    y_ok = ops.take(y, ops.convert_to_tensor(ok), axis=0)
    still, _ = _INSPECT(model, ops.convert_to_tensor(clean), y_ok, kappa,
                        targeted=bool(targeted))
    _, grad = _INSPECT(model, ops.convert_to_tensor(sol), y_ok, kappa,
                       targeted=bool(targeted))
    still = ops.convert_to_numpy(still)
    point = np.where(still[:, None, None, None], clean, sol)
    count = np.sum(np.any(point != x_np[ok], axis=-1), axis=(1, 2))
    better = count < best_count[ok]
    best_x[ok[better]] = point[better]
    best_count[ok[better]] = count[better]
    return moved, np.sum(np.abs(ops.convert_to_numpy(grad) * delta),
                         axis=-1)


def _shrink(mask, active, ok, moved, score, prune_fraction):
    """Shrinks the allowed sets `mask[ok]` in place: drops the unchanged
    pixels, then the lowest-scoring fraction of the rest; an example with
    too few pixels left is finished (`active` False) instead."""
    for j, b in enumerate(ok):
        keep = (mask[b, ..., 0] & moved[j, ..., 0]).copy()
        n = int(keep.sum())
        k = max(1, int(prune_fraction * n))
        if n <= k:
            active[b] = False
            continue
        cand = np.where(keep, score[j], np.inf).ravel()
        drop = np.argpartition(cand, k - 1)[:k]
        keep.flat[drop] = False
        mask[b] = keep[..., None]


def _search(model, x32, y, batch, *, targeted, confidence, c_init, c_max,
            steps, learning_rate, prune_fraction, max_rounds, clip_min,
            clip_max, jit_compile):
    """The pixel-removal search of the module docstring, one L2 solve per
    round for the examples still running; returns `best_x` (NumPy float32,
    the successful point with the fewest changed pixels, `x` where none)."""
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    kappa = primitives.as_scalar(confidence)
    lr = primitives.as_scalar(learning_rate)
    steps_t = ops.convert_to_tensor(int(steps), "int32")
    solve = _SOLVE_XLA if jit_compile else _SOLVE
    model = _for_compile(model)
    negligible = _NEGLIGIBLE * (clip_max - clip_min)

    x_np = ops.convert_to_numpy(x32)
    mask = np.ones(x_np.shape[:3] + (1,), bool)
    const = np.full(batch, float(c_init), np.float64)
    active = np.ones(batch, bool)
    best_x = x_np.copy()
    best_count = np.full(batch, np.iinfo(np.int64).max, np.int64)
    w_warm = ops.convert_to_numpy(primitives.to_tanh_space(x32, lo, hi))
    for _ in range(int(max_rounds)):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        idx_t = ops.convert_to_tensor(idx)
        x_i, y_i = ops.take(x32, idx_t, axis=0), ops.take(y, idx_t, axis=0)
        solved, x_sol, w_sol, w_end = solve(
            model, x_i, y_i, ops.convert_to_tensor(w_warm[idx]),
            ops.convert_to_tensor(mask[idx].astype(np.float32)),
            ops.convert_to_tensor(const[idx].astype(np.float32)), lr,
            steps_t, lo, hi, kappa, targeted=bool(targeted))
        solved = ops.convert_to_numpy(solved)
        # Failure: double c, retry from the last iterate (same set).
        bad = idx[~solved]
        const[bad] *= 2.0
        w_warm[bad] = ops.convert_to_numpy(w_end)[~solved]
        active[bad[const[bad] > c_max]] = False
        if not solved.any():
            continue
        ok = idx[solved]
        sol = ops.convert_to_numpy(x_sol)[solved]
        w_warm[ok] = ops.convert_to_numpy(w_sol)[solved]
        moved, score = _record(model, x_np, y, ok, sol, negligible, kappa,
                               targeted, best_x, best_count)
        _shrink(mask, active, ok, moved, score, prune_fraction)
    return best_x


def _finish(x, x32, best_x, clip_min, clip_max):
    """`best_x` in the dtype of `x`, inside the box; unchanged pixels and
    failures are `x` itself, bit for bit."""
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    out = ops.cast(ops.clip(ops.convert_to_tensor(best_x), lo, hi), x.dtype)
    # Unchanged pixels and failures are x itself, bit for bit.
    changed = best_x != ops.convert_to_numpy(x32)
    return ops.where(ops.convert_to_tensor(changed), out, x)


@register_attack("cw_l0")
def cw_l0(
    model: Callable, x: Any, y: Any | None, *,
    targeted: bool = False, confidence: float = 0.0, c_init: float = 1.0,
    c_max: float = 100.0, steps: int = 50, learning_rate: float = 0.05,
    prune_fraction: float = 0.1, max_rounds: int = 200, clip_min: float = 0.0,
    clip_max: float = 1.0, seed: int | None = None, jit_compile: bool = False,
) -> Any:
    """Carlini-Wagner L0 attack (arXiv 1608.04644, Sec. V.B).

    A minimum-L0 attack: per example, the adversarial example with the
    fewest changed pixels found by the search of the module docstring.

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False`. Logits, never
            probabilities (the margin loss is defined on logits).
        x: float `(batch, height, width, channels)` in `[clip_min,
            clip_max]` (default `[0, 1]`). Not modified.
        y: int `(batch,)`: true labels (untargeted) or target labels
            (`targeted=True`). None uses the model's predictions
            (untargeted only).
        targeted: reach the label `y` instead of leaving it.
        confidence: kappa >= 0, the logit margin by which the adversarial
            class must win.
        c_init: starting weight `c` > 0 of the margin loss against the
            squared L2 distance (as in `cw_l2`, whose default it shares;
            the paper starts at 1e-3 with 1000-step solves).
        c_max: `c` is doubled after each failed solve while `c <= c_max`,
            then the example is finished. Each doubling costs one solve, so
            `c_max / c_init` sets the cost of the final, failing round.
        steps: maximum Adam iterations per L2 solve, >= 1.
        learning_rate: Adam step size in `w` (tanh) space, > 0.
        prune_fraction: in (0, 1): the fraction of the allowed pixels
            removed per successful round (at least one pixel; the paper
            removes exactly one; measurements in the module docstring).
        max_rounds: upper bound >= 1 on the number of L2 solves per example
            (successes plus failures).
        clip_min, clip_max: the valid box of pixel values.
        seed: accepted for API uniformity; the attack is deterministic (it
            starts at `x`) and ignores it.
        jit_compile: compile the inner Adam loop with XLA.

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box. Where the
        attack succeeded (misclassified, or classified as the target, with
        margin >= `confidence`) it is the successful point with the fewest
        changed pixels; every other pixel equals `x` exactly. Elsewhere it
        is `x` itself, unchanged bit for bit (so `x_adv == x` marks a
        failure, or an `x` that is already adversarial: zero pixels).

    Raises:
        ValueError: `confidence < 0`, `c_init <= 0`, `c_max < c_init`,
            `steps < 1` or not an integer, `learning_rate <= 0`,
            `prune_fraction` outside (0, 1), `max_rounds < 1`, `clip_min >=
            clip_max`, `targeted=True` with `y=None`, or `x` not a rank-4
            float tensor inside the box; the message names the value.

    Example:
        >>> x_adv = cw_l0(model, x, y, steps=100)
        >>> pixels = np.sum(np.any(np.asarray(x_adv) != np.asarray(x),
        ...                        axis=-1), axis=(1, 2))
    """
    _check_args(confidence, c_init, c_max, steps, learning_rate,
                prune_fraction, max_rounds)
    x, x32, y, batch = primitives.prepare_min_norm(
        model, x, y, eps=None, clip_min=clip_min, clip_max=clip_max,
        targeted=targeted)
    del seed  # deterministic attack
    if batch == 0:
        return ops.copy(x)
    best_x = _search(
        model, x32, y, batch, targeted=targeted, confidence=confidence,
        c_init=c_init, c_max=c_max, steps=steps, learning_rate=learning_rate,
        prune_fraction=prune_fraction, max_rounds=max_rounds,
        clip_min=clip_min, clip_max=clip_max, jit_compile=jit_compile)
    return _finish(x, x32, best_x, clip_min, clip_max)
