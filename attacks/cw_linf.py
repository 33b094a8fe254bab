"""Carlini-Wagner L-inf attack (Carlini & Wagner 2017, "Towards Evaluating
the Robustness of Neural Networks", arXiv 1608.04644, Sec. V.C).

Like the L2 attack (`attacks.cw`), this is a *minimum-norm* attack: it
searches, per example, for the adversarial example of smallest L-inf
distance. The L-inf norm is a poor objective for gradient descent (only the
largest coordinate gets a gradient, so descent oscillates between two
pixels), so the paper replaces it by a hinge on every coordinate:

    minimise over w   c * f(x') + sum_i max(0, |x'_i - x_i| - tau),
    x' = lo + (hi - lo) * (tanh(w) + 1) / 2

(the tanh change of variables of Sec. V.A keeps `x'` in the box), with the
margin loss f_6 on the logits `Z`

    targeted:   f(x') = max(max_{i != t} Z_i - Z_t, -kappa)
    untargeted: f(x') = max(Z_y - max_{i != y} Z_i, -kappa).

Only the coordinates beyond `tau` are penalised. The outer search of the
paper, done here per example:

1. Start with `tau = tau_init` (1: no penalty on the [0, 1] box) and a small
   `c = c_init`, warm-started at `x`.
2. Solve the problem above with Adam for at most `steps` iterations. The
   solve *succeeds* at the first iterate that is adversarial (margin >=
   kappa) with every `|x'_i - x_i| <= tau` (the penalty is zero; a 1%
   float slack on `tau` is allowed, see `_TAU_SLACK`), the paper's early
   abort.
3. On success: `tau <- tau_decay * min(tau, ||x' - x||_inf)` (paper: "if
   delta_i < tau for all i, reduce tau by a factor of 0.9") and the next
   solve is warm-started from the successful `x'`; `c` is kept.
   On failure: `c <- 2 c` and the solve is repeated; once `c > c_max` the
   example is finished.

The smallest-L-inf adversarial iterate seen over all solves is returned.

Deviation from the paper: a retry after a failure continues from the
failed solve's last iterate, its perturbation clipped to `[-tau, tau]`,
with fresh Adam moments; the paper restarts it from the last successful
point, so that with Adam (invariant to the scale of the loss, and `c` only
weighs against the hinge) a retry mostly repeats the failed solve.
Measured on the Fashion-MNIST test CNN (25 images, 30-step solves,
learning rate 0.05, `c_init` 0.1): median L-inf 0.091 with the paper's
restart, 0.059 with the continuation, both 100% success.

Defaults (`cw_linf`'s arguments). The paper starts at `c = 1e-5`; with Adam
`c` only matters against the hinge, and `c_init = 1e-3` saves a few failed
doubling solves: on the Fashion-MNIST test CNN (25 images, defaults
otherwise) median L-inf 0.0481 in 25 s vs 0.0480 in 31 s with 1e-5, 100%
success for both (PGD-20 at eps = 0.1 broke 84% of the same images). The
paper runs 1000 Adam steps at learning rate 5e-3; on the test CNN 50 at 0.05
gave the same median L-inf as 100 at 0.01 (0.048 vs 0.046) in 40% of the
time. A natural bound on `max_rounds` is about `log(tau_final) /
log(tau_decay) + log2(c_max / c_init)` solves.

Pixels exactly at `clip_min` or `clip_max` hardly move in tanh space
(`tanh'` is ~1e-6 there, the paper's parametrisation too), so unlike PGD
this attack barely uses them (on Fashion-MNIST: the black background).

Each Adam solve is one compiled function (`backends.compile_fn`) over
the batch of still running examples, with `tau` and `c` as per-example
tensors (no retrace per value); examples that succeed stop moving and the
loop exits when all have.

Adam is written out on tensors as in `attacks.cw` (fresh moments per
solve), so no Keras optimizer variables are created inside the loop.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from attacks.cw import _for_compile, _value_and_grad, adam_update
from core import backends

# A solve counts as within tau when ||x' - x||_inf <= tau * (1 + slack):
# Adam iterates hover around the hinge, and an exact test would rarely see
# every coordinate inside at once. The slack is well below 1 - tau_decay,
# so tau still shrinks geometrically.
_TAU_SLACK = 0.01
# Examples whose tau falls below this fraction of the box are finished
# (already adversarial at x, up to the tanh round trip).
_TAU_FLOOR = 1e-5


def _linf_objective(model, x, y, w, const, tau, lo, hi, kappa, targeted):
    """`(x', ||x' - x||_inf, loss, success)` at `w`, per example."""
    x_adv = primitives.from_tanh_space(w, lo, hi)
    delta = x_adv - x
    linf = ops.max(ops.abs(delta), axis=(1, 2, 3))
    tau_b = ops.reshape(tau, (-1, 1, 1, 1))
    penalty = ops.sum(ops.relu(ops.abs(delta) - tau_b), axis=(1, 2, 3))
    logits = primitives.call_model(model, x_adv)
    z_y, z_other = primitives.logit_margins(logits, y)
    gap = (z_other - z_y) if targeted else (z_y - z_other)
    loss = const * ops.maximum(gap, -kappa) + penalty
    pred = ops.cast(ops.argmax(logits, axis=-1), "int32")
    hit = ops.equal(pred, y) if targeted else ops.not_equal(pred, y)
    succ = ops.logical_and(hit, -gap >= kappa)
    return x_adv, linf, loss, succ


def _linf_solve(model, x, y, w0, const, tau, lr, steps, lo, hi, kappa, *,
                targeted):
    """One penalised solve per example for fixed `(c, tau)`.

    Runs Adam from `w0` until every example has succeeded (adversarial with
    `||delta||_inf <= tau`, slack included) or `steps` steps were taken
    (one `keras.ops.while_loop`); an example stops moving at its first
    success.

    Returns:
        best_x, best_linf: the smallest-L-inf adversarial iterate seen
            (`x` and `inf` where none);
        solved: bool `(batch,)`;
        w_sol, linf_sol: the successful iterate (in tanh space) and its
            L-inf (`w0` and `inf` where not solved);
        w_end: the last iterate with its perturbation clipped to
            `[-tau, tau]` (the warm start of a retry after a failure).
    """
    batch = ops.shape(x)[0]
    inf = ops.full((batch,), np.float32(np.inf), "float32")
    bound = tau * (1.0 + _TAU_SLACK)

    def objective(w):
        x_adv, linf, loss, succ = _linf_objective(
            model, x, y, w, const, tau, lo, hi, kappa, targeted)
        return ops.sum(loss), (x_adv, linf, succ)

    # Iterates 0 .. steps are evaluated (the last one after `steps` steps).
    def cond(i, w, m, v, best_x, best_linf, w_sol, linf_sol, solved):
        return ops.logical_and(i <= steps,
                               ops.logical_not(ops.all(solved)))

    def body(i, w, m, v, best_x, best_linf, w_sol, linf_sol, solved):
        _, (x_adv, linf, succ), grad = _value_and_grad(objective, w)
        take = ops.logical_and(succ, linf < best_linf)
        best_linf = ops.where(take, linf, best_linf)
        best_x = primitives.select(take, x_adv, best_x)
        new = ops.logical_and(ops.logical_and(succ, linf <= bound),
                              ops.logical_not(solved))
        w_sol = primitives.select(new, w, w_sol)
        linf_sol = ops.where(new, linf, linf_sol)
        solved = ops.logical_or(solved, new)
        step, m, v = adam_update(w, m, v, grad, i, lr)
        w = primitives.select(solved, w, w - step)
        return i + 1, w, m, v, best_x, best_linf, w_sol, linf_sol, solved

    init = (ops.convert_to_tensor(0, "int32"), w0, ops.zeros_like(w0),
            ops.zeros_like(w0), x, inf, w0, inf, ops.zeros((batch,), "bool"))
    (_, w, _, _, best_x, best_linf, w_sol, linf_sol,
     solved) = backends.while_loop(model, cond, body, init)
    # A failed solve hands on its last iterate, moved into the tau-box.
    x_end = primitives.from_tanh_space(w, lo, hi)
    tau_b = ops.reshape(tau, (-1, 1, 1, 1))
    x_end = x + ops.clip(x_end - x, -tau_b, tau_b)
    return (best_x, best_linf, solved, w_sol, linf_sol,
            primitives.to_tanh_space(x_end, lo, hi))


_STATIC = ("targeted",)
_SOLVE = backends.compile_fn(_linf_solve, static_argnames=_STATIC)
_SOLVE_XLA = backends.compile_fn(_linf_solve, jit_compile=True,
                                 static_argnames=_STATIC)


def _check_args(confidence, c_init, c_max, tau_init, tau_decay, steps,
                learning_rate, max_rounds):
    """Raises ValueError for a bad scalar argument of `cw_linf`."""
    primitives.check_number("confidence", confidence, positive=False)
    primitives.check_c_range(c_init, c_max)
    primitives.check_number("tau_init", tau_init, positive=True)
    primitives.check_number("tau_decay", tau_decay, positive=True)
    if not tau_decay < 1:
        raise ValueError(f"tau_decay must be in (0, 1); got {tau_decay!r}")
    primitives.check_int("steps", steps)
    primitives.check_number("learning_rate", learning_rate, positive=True)
    primitives.check_int("max_rounds", max_rounds)


def _search(model, x32, y, batch, *, targeted, confidence, c_init, c_max,
            tau_init, tau_decay, steps, learning_rate, max_rounds, clip_min,
            clip_max, jit_compile):
    """The outer search over `(tau, c)` of the module docstring, one solve
    per round for the examples still running.

    Returns:
        best_x: float32 NumPy array, the smallest-L-inf adversarial iterate
            seen (`x` where none);
        best_linf: float32 `(batch,)`, its L-inf (`inf` where none).
    """
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    kappa = primitives.as_scalar(confidence)
    lr = primitives.as_scalar(learning_rate)
    steps_t = ops.convert_to_tensor(int(steps), "int32")
    solve = _SOLVE_XLA if jit_compile else _SOLVE
    model = _for_compile(model)
    floor = _TAU_FLOOR * (clip_max - clip_min)

    tau = np.full(batch, float(tau_init), np.float64)
    const = np.full(batch, float(c_init), np.float64)
    active = np.ones(batch, bool)
    best_linf = np.full(batch, np.inf, np.float32)
    best_x = ops.convert_to_numpy(x32)
    w_warm = ops.convert_to_numpy(primitives.to_tanh_space(x32, lo, hi))
    for _ in range(int(max_rounds)):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        idx_t = ops.convert_to_tensor(idx)
        run_x, run_linf, solved, w_sol, linf_sol, w_end = solve(
            model, ops.take(x32, idx_t, axis=0), ops.take(y, idx_t, axis=0),
            ops.convert_to_tensor(w_warm[idx]),
            ops.convert_to_tensor(const[idx].astype(np.float32)),
            ops.convert_to_tensor(tau[idx].astype(np.float32)), lr, steps_t,
            lo, hi, kappa, targeted=bool(targeted))
        run_linf = ops.convert_to_numpy(run_linf)
        solved = ops.convert_to_numpy(solved)
        better = run_linf < best_linf[idx]
        best_linf[idx[better]] = run_linf[better]
        best_x[idx[better]] = ops.convert_to_numpy(run_x)[better]
        # Success: shrink tau, warm-start from the solution. Failure: double
        # c and continue from where the solve ended; stop once c > c_max.
        ok, bad = idx[solved], idx[~solved]
        tau[ok] = tau_decay * np.minimum(
            tau[ok], ops.convert_to_numpy(linf_sol)[solved])
        w_warm[ok] = ops.convert_to_numpy(w_sol)[solved]
        w_warm[bad] = ops.convert_to_numpy(w_end)[~solved]
        const[bad] *= 2.0
        active[bad[const[bad] > c_max]] = False
        active[ok[tau[ok] < floor]] = False
    return best_x, best_linf


def _finish(x, x32, best_x, best_linf, eps, clip_min, clip_max):
    """`x_adv` in the dtype of `x`: the best point, clipped to the `eps`
    box when given; `x` itself, bit for bit, where none was found."""
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    found = ops.convert_to_tensor(np.isfinite(best_linf))
    x_adv = ops.clip(ops.convert_to_tensor(best_x), lo, hi)
    if eps is not None:
        e = primitives.as_scalar(eps)
        x_adv = ops.clip(x32 + ops.clip(x_adv - x32, -e, e), lo, hi)
    out = ops.cast(x_adv, x.dtype)
    # Failures are x itself, bit for bit (not a float32 round trip).
    return ops.where(ops.reshape(found, (-1, 1, 1, 1)), out, x)


@register_attack("cw_linf")
def cw_linf(
    model: Callable, x: Any, y: Any | None, *,
    targeted: bool = False, confidence: float = 0.0, c_init: float = 1e-3,
    c_max: float = 20.0, tau_init: float = 1.0, tau_decay: float = 0.9,
    steps: int = 50, learning_rate: float = 0.05, max_rounds: int = 200,
    clip_min: float = 0.0, clip_max: float = 1.0, eps: float | None = None,
    seed: int | None = None, jit_compile: bool = False,
) -> Any:
    """Carlini-Wagner L-inf attack (arXiv 1608.04644, Sec. V.C).

    A minimum-norm attack: per example, the smallest-L-inf adversarial
    example found by the search over `tau` and `c` of the module docstring.

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
        c_init: starting weight `c` > 0 of the margin loss (paper: 1e-5).
        c_max: `c` is doubled after each failed solve while `c <= c_max`
            (paper: 20); the example is finished once it exceeds it.
        tau_init: the first hinge threshold `tau` > 0 (paper: 1).
        tau_decay: factor in (0, 1) shrinking `tau` on success (paper: 0.9).
        steps: maximum Adam iterations per solve, >= 1 (paper: 1000).
        learning_rate: Adam step size in `w` (tanh) space, > 0 (paper: 5e-3).
        max_rounds: upper bound >= 1 on the number of solves per example
            (successes plus failures).
        clip_min, clip_max: the valid box of pixel values.
        eps: optional L-inf radius >= 0. If given, each returned
            perturbation is clipped to `[-eps, eps]` at the end (for a fixed
            threat model); a clipped example may no longer be adversarial.
            None (default) returns the minimum-norm result.
        seed: accepted for API uniformity; the attack is deterministic (it
            starts at `x`) and ignores it.
        jit_compile: compile the inner Adam loop with XLA.

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box. Where some
        iterate was adversarial (margin >= `confidence`) it is the one of
        smallest L-inf distance to `x`; elsewhere it is `x` itself,
        unchanged bit for bit (so `x_adv == x` marks a failure).

    Raises:
        ValueError: `confidence < 0`, `c_init <= 0`, `c_max < c_init`,
            `tau_init <= 0`, `tau_decay` outside (0, 1), `steps < 1` or not
            an integer, `learning_rate <= 0`, `max_rounds < 1`, `eps < 0`,
            `clip_min >= clip_max`, `targeted=True` with `y=None`, or `x`
            not a rank-4 float tensor inside the box; the message names the
            value.

    Example:
        >>> x_adv = cw_linf(model, x, y, steps=100)
        >>> linf = ops.max(ops.abs(x_adv - x), axis=(1, 2, 3))
    """
    _check_args(confidence, c_init, c_max, tau_init, tau_decay, steps,
                learning_rate, max_rounds)
    x, x32, y, batch = primitives.prepare_min_norm(
        model, x, y, eps=eps, clip_min=clip_min, clip_max=clip_max,
        targeted=targeted)
    del seed  # deterministic attack
    if batch == 0:
        return ops.copy(x)
    best_x, best_linf = _search(
        model, x32, y, batch, targeted=targeted, confidence=confidence,
        c_init=c_init, c_max=c_max, tau_init=tau_init, tau_decay=tau_decay,
        steps=steps, learning_rate=learning_rate, max_rounds=max_rounds,
        clip_min=clip_min, clip_max=clip_max, jit_compile=jit_compile)
    return _finish(x, x32, best_x, best_linf, eps, clip_min, clip_max)
