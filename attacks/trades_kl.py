"""The TRADES inner maximisation as an attack: L-inf sign ascent on
KL(p(x) || p(x')), the divergence of the model's own prediction.

Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan 2019, "Theoretically Principled
Trade-off between Robustness and Accuracy", ICML, arXiv 1901.08573,
Algorithm 1, lines 4-7 (`trades_loss` of the authors' trades.py): start at
`x' = x + 0.001 * N(0, 1)`, then `steps` times

    x' <- Proj_{B(x, eps) ∩ [0, 1]}(x' + step_size * sign(grad_x' KL))

with the network in inference mode and p(x) held fixed. `training.trades`
trains on it; registered as "trades_kl", evaluate.py can run it too
(`--attack=trades_kl`): it needs no labels, so it is the attack of the
TRADES boundary term, weaker than PGD on the cross-entropy for accuracy.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from core import backends

INIT_STD = 0.001  # the reference code's start: x + 0.001 * N(0, 1)


def kl_divergence(logits_p: Any, logits_q: Any) -> Any:
    """Per-example KL(softmax(logits_p) || softmax(logits_q)), float32
    `(batch,)` from two float `(batch, classes)` logits."""
    log_p = ops.log_softmax(ops.cast(logits_p, "float32"), axis=-1)
    log_q = ops.log_softmax(ops.cast(logits_q, "float32"), axis=-1)
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def _kl_ascent(model, x, noise, eps, step_size, steps, clip_min, clip_max):
    """`steps` sign steps on the KL from `x + noise` (one
    `keras.ops.fori_loop`); returns the last iterate."""
    p_logits = ops.stop_gradient(primitives.call_model(model, x))

    def objective(x_adv):
        return ops.sum(kl_divergence(
            p_logits, primitives.call_model(model, x_adv))), ()

    def body(i, x_adv):
        _, _, grad = backends.value_and_grad(objective, x_adv)
        delta = primitives.project(x_adv + step_size * ops.sign(grad) - x,
                                   eps, "inf")
        return ops.clip(x + delta, clip_min, clip_max)

    return backends.fori_loop(model, 0, steps, body, x + noise)


_LOOP = backends.compile_fn(_kl_ascent)


def _start_noise(shape, seed):
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seed = (int(seed), 0)
    return primitives.normal(shape, seed)


@register_attack("trades_kl")
def trades_kl(model: Callable, x: Any, y: Any = None, *, eps: float,
              step_size: float, steps: int,
              seed: int | Any | tuple[int, int] | None = None,
              clip_min: float = 0.0, clip_max: float = 1.0) -> Any:
    """The inner maximisation of TRADES (Zhang et al. 2019, arXiv
    1901.08573, Algorithm 1, lines 4-7; module doc).

    Args:
        model: maps `x` to logits `(batch, classes)`; a Keras model is
            called with `training=False`.
        x: float `(batch, height, width, channels)` in
            `[clip_min, clip_max]`.
        y: ignored (the objective is the divergence from the model's own
            prediction at `x`); accepted for the uniform attack signature.
        eps: L-inf radius on the [0, 1] scale (e.g. 0.031 ~ 8 / 255), >= 0.
        step_size: the L-inf step, > 0, same scale.
        steps: number of sign steps, >= 1.
        seed: the 0.001 * N(0, 1) start: None draws from the global
            generator (eager only under JAX); an int `s` or a stateless
            pair `(s, k)` (a tensor too, e.g. `(seed, optimizer step)`
            inside a training step) makes it reproducible (an int means
            `(s, 0)`); a `keras.random.SeedGenerator` draws from it.
        clip_min, clip_max: the pixel box, default `[0, 1]`.

    Returns:
        `x_adv` of the shape and dtype of `x`, inside the box and with
        `|x_adv - x| <= eps` per pixel, that locally maximises
        `KL(p(x) || p(x_adv))` with p(x) held fixed.

    Raises:
        ValueError: eps < 0, step_size <= 0, steps < 1 (naming the value),
            `clip_min >= clip_max`, or `x` not a float rank-4 tensor
            inside the box.
    """
    del y  # the KL objective needs no labels
    primitives.validate(eps=eps, norm="inf", steps=steps,
                        step_size=step_size, clip_min=clip_min,
                        clip_max=clip_max)
    primitives.check_inputs(x, None, clip_min, clip_max)
    x = ops.convert_to_tensor(x)
    x32 = ops.cast(x, "float32")
    noise = INIT_STD * _start_noise(ops.shape(x32), seed)
    x_adv = _LOOP(model, x32, noise, primitives.as_scalar(eps),
                  primitives.as_scalar(step_size),
                  ops.convert_to_tensor(int(steps), "int32"),
                  primitives.as_scalar(clip_min),
                  primitives.as_scalar(clip_max))
    return ops.cast(x_adv, x.dtype)
