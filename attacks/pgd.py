"""Projected gradient descent (PGD) and the basic iterative method (BIM).

PGD (Madry et al. 2018, arXiv 1706.06083, Eq. 2) iterates
`x_{t+1} = Proj_{B(x, eps)}(x_t + step_size * d_t)` with `d_t = sign(grad)`
for L-inf and `grad / ||grad||_2` for L2, starting from a uniform random point
of the eps-ball; it is clipped to the box `[clip_min, clip_max]` after every
step. BIM / I-FGSM (Kurakin, Goodfellow, Bengio 2017, arXiv 1607.02533) is the
same iteration started at `x` itself (`rand_init=False`).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from attacks import primitives
from attacks._registry import register_attack


def _evaluate(model, x_adv, y, sign, loss):
    logits = primitives.call_model(model, x_adv)
    obj = sign * primitives.per_example_loss(logits, y, loss)
    return logits, obj


def _keep(best, x_adv, logits, obj, y, targeted, force, allow=True):
    """Per example, replaces the best point by `x_adv` where it is worse for
    the model (or where `force`), but only where `allow`."""
    best_x, best_obj, best_succ = best
    succ = primitives.success(logits, y, targeted)
    take = tf.logical_or(force, primitives.better(succ, obj, best_succ, best_obj))
    take = tf.logical_and(take, allow)
    return (
        primitives.select(take, x_adv, best_x),
        tf.where(take, obj, best_obj),
        tf.where(take, succ, best_succ),
    )


def _pgd_loop(model, x, y, x_start, eps, step_size, steps, clip_min,
              clip_max, norm, targeted, loss):
    """Runs `steps` projected steps; returns the best post-step iterate per
    example `(x_best, attacker_objective, success)`."""
    sign = -1.0 if targeted else 1.0
    x_adv = tf.clip_by_value(x_start, clip_min, clip_max)
    batch = tf.shape(x)[0]
    best = (x_adv, tf.fill([batch], -float("inf")), tf.zeros([batch], tf.bool))
    for i in tf.range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits, obj = _evaluate(model, x_adv, y, sign, loss)
            total = tf.reduce_sum(obj)
        grad = tape.gradient(total, x_adv)
        if grad is None:  # known while tracing: a clear error, not a crash
            raise ValueError(
                "the model's logits have no gradient with respect to x (a "
                "non-differentiable layer such as ThermometerEncoding or "
                "BitDepthReduction?); attack it through attacks.bpda.bpda")
        # x_adv here is iterate i; i == 0 is the start, which never counts.
        force = tf.fill([batch], tf.equal(i, 1))
        best = _keep(best, x_adv, logits, obj, y, targeted, force, i > 0)
        delta = x_adv + step_size * primitives.steepest_step(grad, norm) - x
        x_adv = tf.clip_by_value(
            x + primitives.project(delta, eps, norm), clip_min, clip_max
        )
    logits, obj = _evaluate(model, x_adv, y, sign, loss)
    force = tf.fill([batch], tf.equal(steps, 1))
    return _keep(best, x_adv, logits, obj, y, targeted, force)


_LOOP = tf.function(_pgd_loop, reduce_retracing=True)
_LOOP_XLA = tf.function(_pgd_loop, reduce_retracing=True, jit_compile=True)


def _restarts(model, x, y, *, eps, step_size, steps, norm, targeted,
              rand_init, restarts, loss, clip_min, clip_max, seed,
              jit_compile):
    """Runs the loop once per restart and keeps, per example, the worst case
    for the model; returns that float32 `x_adv`."""
    x32 = tf.cast(x, tf.float32)
    if y is None:
        y = primitives.default_labels(model, x32)
    y = tf.cast(y, tf.int32)
    eps_t, step_t = primitives.as_scalar(eps), primitives.as_scalar(step_size)
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    steps_t = tf.constant(int(steps), tf.int32)
    loop = _LOOP_XLA if jit_compile else _LOOP
    best = None
    for r in range(int(restarts)):
        x_start = x32
        if rand_init:
            seed_r = primitives.seed_pair(seed, r)
            x_start = primitives.random_in_ball(x32, eps_t, norm, seed_r)
        run = loop(model, x32, y, x_start, eps_t, step_t, steps_t, lo, hi,
                   norm, bool(targeted), loss)
        best = primitives.keep_worst(best, run)
    return best[0]


@register_attack("pgd")
def pgd(
    model: Callable,
    x: tf.Tensor,
    y: tf.Tensor | None,
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
) -> tf.Tensor:
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
        seed: int for reproducible random starts; None draws from the
            global generator.
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
    x = tf.convert_to_tensor(x)
    x_adv = _restarts(
        model, x, y, eps=eps, step_size=step_size, steps=steps, norm=norm,
        targeted=targeted, rand_init=rand_init, restarts=restarts, loss=loss,
        clip_min=clip_min, clip_max=clip_max, seed=seed,
        jit_compile=jit_compile)
    return tf.cast(x_adv, x.dtype)


@register_attack("bim")
def bim(model: Callable, x: tf.Tensor, y: tf.Tensor | None, *, eps: float,
        step_size: float, steps: int, **kwargs) -> tf.Tensor:
    """BIM / I-FGSM (Kurakin, Goodfellow, Bengio 2017, arXiv 1607.02533,
    Sec. 2.2): `pgd` started at `x` (`rand_init=False`). Same arguments,
    returns and errors as `pgd`."""
    if kwargs.pop("rand_init", False):
        raise ValueError("bim starts at x; use pgd for rand_init=True")
    return pgd(model, x, y, eps=eps, step_size=step_size, steps=steps,
               rand_init=False, **kwargs)
