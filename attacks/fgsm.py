"""The fast gradient sign method (FGSM) and fast gradient method (FGM, L2).

FGSM (Goodfellow, Shlens, Szegedy 2015, arXiv 1412.6572, Sec. 4):
`x_adv = clip(x + eps * sign(grad_x J(x, y)))`; targeted FGSM descends the
loss of a target label instead. FGM is the L2 analogue,
`x + eps * g / ||g||_2`. Both are exactly one PGD step of size eps started
at `x`, which is how they are computed here.
"""

from __future__ import annotations

from typing import Any, Callable

from attacks._registry import register_attack
from attacks.pgd import pgd


def _one_step(model, x, y, eps, norm, kwargs):
    for name in ("steps", "step_size", "rand_init", "restarts"):
        if name in kwargs:
            raise ValueError(
                f"{name} is fixed for single-step attacks; use pgd to set it"
            )
    if "norm" in kwargs:
        raise ValueError(
            f"norm is fixed: fgsm is L-inf and fgm is L2; got "
            f"norm={kwargs['norm']!r}; use fgm, fgsm or pgd(steps=1) for "
            f"another norm ('inf' or '2')")
    return pgd(model, x, y, eps=eps, step_size=max(eps, 1e-12), steps=1,
               norm=norm, rand_init=False, **kwargs)


@register_attack("fgsm")
def fgsm(model: Callable, x: Any, y: Any | None, *, eps: float,
         **kwargs) -> Any:
    """FGSM, L-inf (Goodfellow et al. 2015, arXiv 1412.6572, Eq. 3).

    Args:
        model, x, y: as in `attacks.pgd.pgd`: `x` float `(batch, height,
            width, channels)` in `[0, 1]`, `y` int `(batch,)` (targets when
            `targeted=True`).
        eps: L-inf budget on the pixel scale, >= 0 (eps = 0 returns `x`).
        **kwargs: `targeted`, `loss`, `clip_min`, `clip_max`, `jit_compile`.

    Returns:
        `x_adv`, same shape and dtype as `x`.

    Raises:
        ValueError: bad `eps`, `loss`, `x` outside the box, or an attempt to
            set `norm`/`steps`/`step_size`/`rand_init`/`restarts`.
    """
    return _one_step(model, x, y, eps, "inf", kwargs)


@register_attack("fgm")
def fgm(model: Callable, x: Any, y: Any | None, *, eps: float,
        **kwargs) -> Any:
    """FGM, L2: one step `eps * g / ||g||_2` (Goodfellow et al. 2015,
    arXiv 1412.6572; the L2 form of Miyato et al. 2016, arXiv 1605.07725).
    Arguments, returns and errors as `fgsm`, with an L2 `eps`."""
    return _one_step(model, x, y, eps, "2", kwargs)
