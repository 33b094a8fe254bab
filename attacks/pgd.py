"""Projected gradient descent (PGD) and the basic iterative method (BIM).

PGD (Madry et al. 2018, arXiv 1706.06083, Eq. 2) iterates
`x_{t+1} = Proj_{B(x, eps)}(x_t + step_size * d_t)` with `d_t = sign(grad)`
for L-inf and `grad / ||grad||_2` for L2, starting from a uniform random point
of the eps-ball; it is clipped to the box `[clip_min, clip_max]` after every
step. BIM / I-FGSM (Kurakin, Goodfellow, Bengio 2017, arXiv 1607.02533) is the
same iteration started at `x` itself (`rand_init=False`).
"""

from __future__ import annotations

from typing import Any, Callable

from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from core import backends


def _evaluate(model, x_adv, y, sign, loss):
    logits = primitives.call_model(model, x_adv)
    obj = sign * primitives.per_example_loss(logits, y, loss)
    return logits, obj


def _keep(best, x_adv, logits, obj, y, targeted, force, allow=True):
    """Per example, replaces the best point by `x_adv` where it is worse for
    the model (or where `force`), but only where `allow`."""
    best_x, best_obj, best_succ = best
    succ = primitives.success(logits, y, targeted)
    take = ops.logical_or(force,
                          primitives.better(succ, obj, best_succ, best_obj))
    take = ops.logical_and(take, allow)
    return (
        primitives.select(take, x_adv, best_x),
        ops.where(take, obj, best_obj),
        ops.where(take, succ, best_succ),
    )


def _pgd_loop(model, x, y, x_start, eps, step_size, steps, clip_min,
              clip_max, *, norm, targeted, loss):
    """Runs `steps` projected steps (one `keras.ops.fori_loop`, so any
    number of steps compiles once); returns the best post-step iterate per
    example `(x_best, attacker_objective, success)`."""
    sign = -1.0 if targeted else 1.0
    batch = ops.shape(x)[0]

    def objective(x_adv):
        logits, obj = _evaluate(model, x_adv, y, sign, loss)
        return ops.sum(obj), (logits, obj)

    def body(i, carry):
        x_adv, best = carry[0], carry[1:]
        _, (logits, obj), grad = backends.value_and_grad(objective, x_adv)
        # x_adv here is iterate i; i == 0 is the start, which never counts.
        force = ops.broadcast_to(ops.equal(i, 1), (batch,))
        best = _keep(best, x_adv, logits, obj, y, targeted, force, i > 0)
        delta = x_adv + step_size * primitives.steepest_step(grad, norm) - x
        x_adv = ops.clip(x + primitives.project(delta, eps, norm), clip_min,
                         clip_max)
        return (x_adv, *best)

    x_adv = ops.clip(x_start, clip_min, clip_max)
    init = (x_adv, x_adv, ops.full((batch,), -float("inf")),
            ops.zeros((batch,), "bool"))
    x_adv, *best = backends.fori_loop(model, 0, steps, body, init)
    logits, obj = _evaluate(model, x_adv, y, sign, loss)
    force = ops.broadcast_to(ops.equal(steps, 1), (batch,))
    return _keep(tuple(best), x_adv, logits, obj, y, targeted, force)


_STATIC = ("norm", "targeted", "loss")
_LOOP = backends.compile_fn(_pgd_loop, static_argnames=_STATIC)
_LOOP_XLA = backends.compile_fn(_pgd_loop, jit_compile=True,
                                static_argnames=_STATIC)


def _restarts(model, x, y, *, eps, step_size, steps, norm, targeted,
              rand_init, restarts, loss, clip_min, clip_max, seed,
              jit_compile):
    """Runs the loop once per restart and keeps, per example, the worst case
    for the model; returns that float32 `x_adv`."""
    x32 = ops.cast(x, "float32")
    if y is None:
        y = primitives.default_labels(model, x32)
    y = ops.cast(y, "int32")
    eps_t, step_t = primitives.as_scalar(eps), primitives.as_scalar(step_size)
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    steps_t = ops.convert_to_tensor(int(steps), "int32")
    loop = _LOOP_XLA if jit_compile else _LOOP
    best = None
    for r in range(int(restarts)):
        x_start = x32
        if rand_init:
            seed_r = primitives.seed_pair(seed, r)
            x_start = primitives.random_in_ball(x32, eps_t, norm, seed_r)
        run = loop(model, x32, y, x_start, eps_t, step_t, steps_t, lo, hi,
                   norm=norm, targeted=bool(targeted), loss=loss)
        best = primitives.keep_worst(best, run)
    return best[0]


@register_attack("pgd")
def pgd(
    model: Callable,
    x: Any,
    y: Any | None,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "inf",
    targeted: bool = False,
    rand_init: bool = True,
    restarts: int = 1,
    loss: str = "ce",
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int | None = None,
    jit_compile: bool = False,
) -> Any:
    """PGD attack (Madry et al. 2018, arXiv 1706.06083, Eq. 2).

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False` (BatchNorm in inference
            mode, statistics untouched). Logits, never probabilities.
        x: float `(batch, height, width, channels)` in `[clip_min, clip_max]`
            (default `[0, 1]`). Not modified.
        y: int `(batch,)`: true labels (untargeted) or target labels
            (`targeted=True`, where they are required). None uses the
            model's predictions (untargeted only).
        eps: radius of the threat model's ball, on the pixel scale of `x`
            (e.g. `8 / 255`), >= 0.
        step_size: the step `alpha` per iteration, > 0, same scale.
        steps: number of iterations, >= 1.
        norm: "inf" (L-inf, sign steps) or "2" (L2, normalised steps).
        targeted: descend the loss of the target label `y` instead of
            ascending the loss of the true label.
        rand_init: start from a uniform random point of the eps-ball (PGD);
            False starts at `x` (BIM).
        restarts: independent runs; the worst case per example is kept
            (Madry et al. 2018, Sec. 3; "use_best").
        loss: "ce" (cross-entropy) or "cw" (Carlini-Wagner margin).
        clip_min, clip_max: the valid box of pixel values.
        seed: int for reproducible random starts (or a stateless seed pair,
            or a `keras.random.SeedGenerator`, which a compiled training
            step under JAX must pass); None draws from the global
            generator (eager only under JAX).
        jit_compile: compile the loop with XLA (off by default: on CPU the
            compile time dominates small runs).

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box and with
        `||x_adv - x||_norm <= eps` (float tolerance). Per example it is the
        best iterate reached by a step (success first, then loss), never the
        unperturbed start, so `pgd(steps=1, step_size=eps, rand_init=False)`
        is exactly FGSM.

    Raises:
        ValueError: `norm` not in ("inf", "2"), `loss` not in ("ce", "cw"),
            `eps < 0`, `steps < 1`, `step_size <= 0`, `restarts < 1`,
            `targeted=True` with `y=None`, or `x` outside
            `[clip_min, clip_max]`; the message names the value.

    Example:
        >>> x_adv = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=10)
    """
    primitives.validate(eps=eps, norm=norm, steps=steps, step_size=step_size,
                        restarts=restarts, loss=loss, clip_min=clip_min,
                        clip_max=clip_max)
    primitives.check_inputs(x, y, clip_min, clip_max, targeted=targeted)
    x = ops.convert_to_tensor(x)
    x_adv = _restarts(
        model, x, y, eps=eps, step_size=step_size, steps=steps, norm=norm,
        targeted=targeted, rand_init=rand_init, restarts=restarts, loss=loss,
        clip_min=clip_min, clip_max=clip_max, seed=seed,
        jit_compile=jit_compile)
    return ops.cast(x_adv, x.dtype)


@register_attack("bim")
def bim(model: Callable, x: Any, y: Any | None, *, eps: float,
        step_size: float, steps: int, **kwargs) -> Any:
    """BIM / I-FGSM (Kurakin, Goodfellow, Bengio 2017, arXiv 1607.02533,
    Sec. 2.2): `pgd` started at `x` (`rand_init=False`). Same arguments,
    returns and errors as `pgd`."""
    if kwargs.pop("rand_init", False):
        raise ValueError("bim starts at x; use pgd for rand_init=True")
    return pgd(model, x, y, eps=eps, step_size=step_size, steps=steps,
               rand_init=False, **kwargs)
