"""The iterative least-likely class method (ILLC), L-inf.

Kurakin, Goodfellow, Bengio 2017, "Adversarial examples in the physical
world", arXiv 1607.02533, Sec. 2.3: with `y_LL = argmin_y p(y | x)` the
least-likely class of the clean prediction,

    x_0 = x,  x_{t+1} = Clip_{x, eps}(x_t - alpha * sign(grad_x J(x_t, y_LL)))

with alpha = 1 (in 0-255 pixel units) and min(eps + 4, 1.25 eps) iterations
(eps in 0-255 units; Sec. 2.2). It is targeted BIM toward `y_LL`, computed
here with `attacks.pgd.pgd(targeted=True, rand_init=False)`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from attacks.pgd import pgd


def illc_steps(eps: float, clip_min: float = 0.0,
               clip_max: float = 1.0) -> int:
    """Kurakin et al.'s iteration count, `ceil(min(e + 4, 1.25 e))` with
    `e = eps` in 0-255 units (`e = 255 * eps / (clip_max - clip_min)`).

    `e` is rounded to 6 decimals before `ceil` so that e.g. `eps = 8 / 255`
    gives 10, not 11 from float noise; the result is at least 1.
    """
    e = 255.0 * eps / (clip_max - clip_min)
    return max(1, math.ceil(round(min(e + 4.0, 1.25 * e), 6)))


def least_likely_labels(model: Callable, x: Any) -> Any:
    """int32 `(batch,)`: the class of smallest logit at `x`."""
    return ops.cast(ops.argmin(primitives.call_model(model, x), axis=-1),
                    "int32")


@register_attack("illc")
def illc(
    model: Callable,
    x: Any,
    y: Any | None,
    *,
    eps: float,
    steps: int | None = None,
    step_size: float | None = None,
    norm: str = "inf",
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int | None = None,
    jit_compile: bool = False,
) -> Any:
    """ILLC attack (Kurakin et al. 2017, arXiv 1607.02533, Sec. 2.3).

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False`. Logits, never
            probabilities.
        x: float `(batch, height, width, channels)` in `[clip_min, clip_max]`
            (default `[0, 1]`). Not modified.
        y: ignored except for validation (int `(batch,)` or None); accepted
            for API uniformity. The target is always the least-likely class
            of the model's clean prediction, not derived from `y`.
        eps: L-inf budget on the pixel scale of `x` (e.g. `16 / 255`), >= 0.
        steps: iterations, >= 1; default `illc_steps(eps)`, the paper's
            `ceil(min(eps*255 + 4, 1.25*eps*255))` (eps in 0-255 units).
        step_size: per-step size, > 0; default one 0-255 grey level,
            `(clip_max - clip_min) / 255` (= 1/255 on `[0, 1]`).
        norm: only "inf" is supported (kept for API uniformity).
        clip_min, clip_max: the valid box of pixel values.
        seed: unused (no random start); accepted for API uniformity.
        jit_compile: compile the loop with XLA.

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box and with
        `||x_adv - x||_inf <= eps`. Like `pgd`, per example it is the best
        post-step iterate (reaching `y_LL` first, then lowest loss of
        `y_LL`), which differs from the paper's final iterate only when a
        later step leaves the target class.

    Raises:
        ValueError: `norm != "inf"`, `eps < 0`, `steps < 1`,
            `step_size <= 0`, a badly shaped `y`, or `x` outside
            `[clip_min, clip_max]`.

    References:
        Kurakin, Goodfellow, Bengio 2017, "Adversarial examples in the
        physical world", arXiv 1607.02533, Sec. 2.3 (ILLC, Eq. 4) and
        Sec. 2.2 (step size and iteration count).
    """
    del seed
    primitives.validate(eps=eps, norm=norm, steps=1 if steps is None else steps,
                   step_size=step_size, clip_min=clip_min, clip_max=clip_max)
    if norm != "inf":
        raise ValueError(f"illc supports only norm='inf'; got {norm!r}")
    primitives.check_inputs(x, y, clip_min, clip_max)
    if steps is None:
        steps = illc_steps(eps, clip_min, clip_max)
    if step_size is None:
        step_size = (clip_max - clip_min) / 255.0
    x = ops.convert_to_tensor(x)
    y_ll = least_likely_labels(model, ops.cast(x, "float32"))
    return pgd(model, x, y_ll, eps=eps, step_size=step_size, steps=steps,
               norm="inf", targeted=True, rand_init=False, loss="ce",
               clip_min=clip_min, clip_max=clip_max, jit_compile=jit_compile)
