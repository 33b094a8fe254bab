"""Transfer (black-box) attacks: craft on a source model, evaluate on another.

`transfer(attack, source)` returns an attack with the library's uniform
signature whose `model` argument (the model under evaluation, the *target*)
is never queried: the adversarial examples are crafted with `attack` on
`source` (a surrogate the attacker owns) and then handed to the target. This
is the black-box threat model of Papernot et al. 2017 and of the CAAD
non-targeted/black-box tracks, and the transfer rows of Tramer et al. 2018.

    fn = transfer(attacks.pgd, source=surrogate)
    x_adv = fn(target_model, x, y, eps=0.1, step_size=0.01, steps=20)

Because the target is never called, a transfer attack gives an *upper bound*
on robust accuracy that is usually far looser than a white-box attack; it is
reported next to white-box numbers, never instead of them.

References:
    Papernot, McDaniel, Goodfellow, Jha, Celik, Swami 2017, "Practical
    Black-Box Attacks against Machine Learning", arXiv 1602.02697.
    Tramer, Kurakin, Papernot, Goodfellow, Boneh, McDaniel 2018, "Ensemble
    Adversarial Training: Attacks and Defenses", arXiv 1705.07204, Sec. 4
    and Table 2 (transfer from held-out source models).
"""

from __future__ import annotations

import functools
from typing import Any, Callable


def transfer(attack: Callable[..., Any], source: Callable) -> Callable[..., Any]:
    """An attack that crafts on `source` and ignores the attacked model.

    Args:
        attack: any attack of this library (`attacks.pgd`, `attacks.fgsm`,
            a `functools.partial` from `attacks.from_config`, an
            `attacks.eot`-wrapped source ...), called as
            `attack(source, x, y, **kwargs)`.
        source: the surrogate model, a callable from float images
            `(batch, height, width, channels)` in `[0, 1]` to logits
            `(batch, classes)`.

    Returns:
        `fn(model, x, y, **kwargs) -> x_adv` with the uniform attack
        signature. `model` (the target) is accepted and not used; `y` are
        the true labels (or targets with `targeted=True`); with `y=None`
        the attack uses the *source's* predictions, since the target is not
        queried. `x_adv` has the shape, dtype and norm bound that `attack`
        guarantees.

    Raises:
        TypeError: `attack` or `source` is not callable.

    Example:
        >>> fn = transfer(attacks.pgd, source=surrogate)
        >>> robust = evaluation.robust_accuracy(target, ds, attack_fn=...)
    """
    if not callable(attack):
        raise TypeError(f"attack must be an attack function; got {attack!r}")
    if not callable(source):
        raise TypeError(f"source must be a model (callable); got {source!r}")

    @functools.wraps(attack)
    def crafted_on_source(model, x, y=None, **kwargs):
        del model  # the target is never queried
        return attack(source, x, y, **kwargs)

    crafted_on_source.source = source
    crafted_on_source.attack = attack
    return crafted_on_source
