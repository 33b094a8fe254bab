"""R+FGSM: FGSM preceded by a small random sign step (L-inf).

Tramer, Kurakin, Papernot, Goodfellow, Boneh, McDaniel 2018, "Ensemble
Adversarial Training: Attacks and Defenses", arXiv 1705.07204, Eq. 7:

    x' = x + alpha * sign(N(0, I))
    x_adv = clip(x' + (eps - alpha) * sign(grad_x' J(x', y)))

The random step escapes the sharp curvature of the loss next to data points
(gradient masking) that plain FGSM is fooled by.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from core import backends


def _rfgsm_step(model, x, y, x_rand, eps, step, clip_min, clip_max, *,
                targeted, loss):
    """One gradient-sign step of size `step` from `x_rand`, projected onto
    the eps-ball around `x` and the box."""
    sign = -1.0 if targeted else 1.0
    x_prime = ops.clip(x_rand, clip_min, clip_max)

    def objective(x_in):
        logits = primitives.call_model(model, x_in)
        obj = sign * primitives.per_example_loss(logits, y, loss)
        return ops.sum(obj), ()

    _, _, grad = backends.value_and_grad(objective, x_prime)
    delta = x_prime + step * ops.sign(grad) - x
    return ops.clip(x + primitives.project(delta, eps, "inf"), clip_min,
                    clip_max)


_STATIC = ("targeted", "loss")
_STEP = backends.compile_fn(_rfgsm_step, static_argnames=_STATIC)
_STEP_XLA = backends.compile_fn(_rfgsm_step, jit_compile=True,
                                static_argnames=_STATIC)


def _check_args(eps, norm, alpha, loss, clip_min, clip_max):
    """Validates the scalar arguments of `rfgsm`; returns the effective
    `alpha` (default `eps / 2`)."""
    primitives.validate(eps=eps, norm=norm, loss=loss, clip_min=clip_min,
                        clip_max=clip_max)
    if norm != "inf":
        raise ValueError(f"rfgsm supports only norm='inf'; got {norm!r}")
    if alpha is None:
        alpha = eps / 2
    if not (np.isfinite(alpha) and 0 <= alpha <= eps):
        raise ValueError(
            f"alpha must satisfy 0 <= alpha <= eps = {eps!r}; got {alpha!r}"
        )
    return alpha


def _run(model, x, y, *, eps, alpha, targeted, loss, clip_min, clip_max,
         seed, jit_compile):
    """Casts `x` to float32, fills in default labels, takes the random sign
    step and then the gradient step; returns the float32 `x_adv`."""
    x32 = ops.cast(x, "float32")
    if y is None:
        y = primitives.default_labels(model, x32)
    y = ops.cast(y, "int32")
    noise = primitives.normal(ops.shape(x32), primitives.seed_pair(seed, 0))
    x_rand = x32 + float(alpha) * ops.sign(noise)
    step = _STEP_XLA if jit_compile else _STEP
    return step(model, x32, y, x_rand, primitives.as_scalar(eps),
                primitives.as_scalar(eps - alpha),
                primitives.as_scalar(clip_min),
                primitives.as_scalar(clip_max), targeted=bool(targeted),
                loss=loss)


@register_attack("rfgsm")
def rfgsm(
    model: Callable,
    x: Any,
    y: Any | None,
    *,
    eps: float,
    alpha: float | None = None,
    norm: str = "inf",
    targeted: bool = False,
    loss: str = "ce",
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int | None = None,
    jit_compile: bool = False,
) -> Any:
    """R+FGSM attack (Tramer et al. 2018, arXiv 1705.07204, Eq. 7).

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False`. Logits, never
            probabilities.
        x: float `(batch, height, width, channels)` in `[clip_min, clip_max]`
            (default `[0, 1]`). Not modified.
        y: int `(batch,)`: true labels (untargeted) or target labels
            (`targeted=True`, where they are required). None uses the
            model's predictions (untargeted only).
        eps: L-inf budget on the pixel scale of `x` (e.g. `8 / 255`), >= 0.
        alpha: size of the random sign step, `0 <= alpha <= eps`; default
            `eps / 2` (the paper uses eps = 16/255, alpha = 8/255). The
            gradient step has size `eps - alpha`; `alpha = 0` is FGSM.
        norm: only "inf" is supported (kept for API uniformity).
        targeted: descend the loss of the target label `y`.
        loss: "ce" (cross-entropy, the paper's J) or "cw" (margin).
        clip_min, clip_max: the valid box of pixel values. The random point
            `x'` is clipped to the box before the gradient is taken.
        seed: int for a reproducible random step (or a
            `keras.random.SeedGenerator`, which a compiled training step
            under JAX must pass); None draws from the global generator
            (eager only under JAX).
        jit_compile: compile the step with XLA.

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box and with
        `||x_adv - x||_inf <= eps`.

    Raises:
        ValueError: `norm != "inf"`, `eps < 0`, `alpha` outside `[0, eps]`,
            `loss` unknown, `targeted=True` with `y=None`, or `x` outside
            `[clip_min, clip_max]`.

    References:
        Tramer, Kurakin, Papernot, Goodfellow, Boneh, McDaniel 2018,
        "Ensemble Adversarial Training: Attacks and Defenses",
        arXiv 1705.07204, Sec. 4.1, Eq. 7.
    """
    alpha = _check_args(eps, norm, alpha, loss, clip_min, clip_max)
    primitives.check_inputs(x, y, clip_min, clip_max, targeted=targeted)
    x = ops.convert_to_tensor(x)
    x_adv = _run(model, x, y, eps=eps, alpha=alpha, targeted=targeted,
                 loss=loss, clip_min=clip_min, clip_max=clip_max, seed=seed,
                 jit_compile=jit_compile)
    return ops.cast(x_adv, x.dtype)
