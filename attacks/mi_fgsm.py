"""MI-FGSM: iterative FGSM with a momentum term (L-inf).

Dong, Liao, Pang, Su, Zhu, Hu, Li 2018, "Boosting Adversarial Attacks with
Momentum", arXiv 1710.06081, Algorithm 1:

    g_{t+1} = mu * g_t + grad_x J(x_t, y) / ||grad_x J(x_t, y)||_1
    x_{t+1} = Clip_{x, eps}(x_t + step_size * sign(g_{t+1}))

with the L1 norm taken per example, and the final iterate returned.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from core import backends

_TINY = 1e-12


def _mi_loop(model, x, y, eps, step_size, mu, steps, clip_min, clip_max, *,
             targeted, loss):
    """Runs `steps` momentum steps from `x` (one `keras.ops.fori_loop`);
    returns the final iterate."""
    sign = -1.0 if targeted else 1.0
    axes = tuple(range(1, len(x.shape)))  # static: keeps x_adv's shape

    def objective(x_adv):
        logits = primitives.call_model(model, x_adv)
        obj = sign * primitives.per_example_loss(logits, y, loss)
        return ops.sum(obj), ()

    def body(i, carry):
        x_adv, g = carry
        _, _, grad = backends.value_and_grad(objective, x_adv)
        l1 = ops.sum(ops.abs(grad), axis=axes, keepdims=True)
        g = mu * g + grad / ops.maximum(l1, _TINY)
        delta = x_adv + step_size * ops.sign(g) - x
        x_adv = ops.clip(x + primitives.project(delta, eps, "inf"), clip_min,
                         clip_max)
        return x_adv, g

    x_adv, _ = backends.fori_loop(model, 0, steps, body, (x, ops.zeros_like(x)))
    return x_adv


_STATIC = ("targeted", "loss")
_LOOP = backends.compile_fn(_mi_loop, static_argnames=_STATIC)
_LOOP_XLA = backends.compile_fn(_mi_loop, jit_compile=True,
                                static_argnames=_STATIC)


def _check_args(eps, norm, steps, step_size, mu, loss, clip_min, clip_max):
    """Validates the scalar arguments of `mi_fgsm`; returns the effective
    `step_size` (default `eps / steps`)."""
    primitives.validate(eps=eps, norm=norm, steps=steps, step_size=step_size,
                        loss=loss, clip_min=clip_min, clip_max=clip_max)
    if norm != "inf":
        raise ValueError(f"mi_fgsm supports only norm='inf'; got {norm!r}")
    if not (np.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu must be a finite number >= 0; got {mu!r}")
    if step_size is None:
        step_size = eps / steps
    return step_size


def _run(model, x, y, *, eps, steps, step_size, mu, targeted, loss,
         clip_min, clip_max, jit_compile):
    """Casts `x` to float32, fills in default labels and runs the loop;
    returns the float32 final iterate."""
    x32 = ops.cast(x, "float32")
    if y is None:
        y = primitives.default_labels(model, x32)
    y = ops.cast(y, "int32")
    loop = _LOOP_XLA if jit_compile else _LOOP
    return loop(model, x32, y, primitives.as_scalar(eps),
                primitives.as_scalar(step_size), primitives.as_scalar(mu),
                ops.convert_to_tensor(int(steps), "int32"),
                primitives.as_scalar(clip_min),
                primitives.as_scalar(clip_max), targeted=bool(targeted),
                loss=loss)


@register_attack("mi_fgsm")
def mi_fgsm(
    model: Callable,
    x: Any,
    y: Any | None,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    mu: float = 1.0,
    norm: str = "inf",
    targeted: bool = False,
    loss: str = "ce",
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int | None = None,
    jit_compile: bool = False,
) -> Any:
    """MI-FGSM attack (Dong et al. 2018, arXiv 1710.06081, Alg. 1).

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False`. Logits, never
            probabilities.
        x: float `(batch, height, width, channels)` in `[clip_min, clip_max]`
            (default `[0, 1]`). Not modified.
        y: int `(batch,)`: true labels (untargeted) or target labels
            (`targeted=True`, where they are required). None uses the
            model's predictions (untargeted only).
        eps: L-inf budget on the pixel scale of `x` (e.g. `16 / 255`), >= 0.
        steps: number of iterations T, >= 1 (paper: 10).
        step_size: per-step size alpha, > 0; default `eps / steps` (paper).
            A larger step is allowed; iterates are still projected.
        mu: momentum decay factor, >= 0 (paper: 1.0); `mu = 0` is I-FGSM
            with L1-normalised (sign-invariant) gradients, i.e. BIM.
        norm: only "inf" is supported (kept for API uniformity).
        targeted: descend the loss of the target label `y` (the momentum
            then accumulates the gradient of `-J`).
        loss: "ce" (cross-entropy, the paper's J) or "cw" (margin).
        clip_min, clip_max: the valid box of pixel values; every iterate is
            clipped to it.
        seed: unused (the attack is deterministic); accepted for API
            uniformity.
        jit_compile: compile the loop with XLA.

    Returns:
        The final iterate `x_T` (as in the paper, no best-iterate
        selection), with the shape and dtype of `x`, inside the box and with
        `||x_adv - x||_inf <= eps`.

    Raises:
        ValueError: `norm != "inf"`, `eps < 0`, `steps < 1`,
            `step_size <= 0`, `mu < 0` or not finite, `loss` unknown,
            `targeted=True` with `y=None`, or `x` outside
            `[clip_min, clip_max]`.

    References:
        Dong, Liao, Pang, Su, Zhu, Hu, Li 2018, "Boosting Adversarial
        Attacks with Momentum", arXiv 1710.06081, Algorithm 1 (Eqs. 6-7).
    """
    del seed
    step_size = _check_args(eps, norm, steps, step_size, mu, loss, clip_min,
                            clip_max)
    primitives.check_inputs(x, y, clip_min, clip_max, targeted=targeted)
    x = ops.convert_to_tensor(x)
    x_adv = _run(model, x, y, eps=eps, steps=steps, step_size=step_size,
                 mu=mu, targeted=targeted, loss=loss, clip_min=clip_min,
                 clip_max=clip_max, jit_compile=jit_compile)
    return ops.cast(x_adv, x.dtype)
