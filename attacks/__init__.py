"""Adversarial attacks with one uniform functional API.

Every attack is `attack(model, x, y, *, eps, ...) -> x_adv`, with `x` float
`(batch, height, width, channels)` in `[0, 1]`, `y` int `(batch,)`, and
`x_adv` of the same shape and dtype inside the box and the eps-ball. See
`attacks.pgd.pgd` for the full contract.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping

from attacks._registry import ATTACKS, SYSTEM_ATTACKS
# Importing an attack module registers its attacks.
from attacks.apgd import apgd_ce, apgd_dlr
from attacks.bpda import bpda, with_straight_through
from attacks.cw import cw_l2
from attacks.cw_l0 import cw_l0
from attacks.cw_linf import cw_linf
from attacks.deepfool import deepfool
from attacks.detector_joint import detector_joint
from attacks.eot import eot
from attacks.exact_eot import exact_eot
from attacks.fgsm import fgm, fgsm
from attacks.illc import illc
from attacks.lbfgs import lbfgs
from attacks.ls_pga import ls_pga
from attacks.mi_fgsm import mi_fgsm
from attacks.one_pixel import one_pixel
from attacks.pgd import bim, pgd
from attacks.rfgsm import rfgsm
from attacks.specialists_targeted import specialists_targeted
from attacks.spsa import spsa
from attacks.square import square
from attacks.trades_kl import trades_kl
from attacks.transfer import transfer
from attacks.adaptive import adaptive_model, require_adaptive, threat_model

__all__ = [
    "apgd_ce", "apgd_dlr", "bim", "bpda", "cw_l0", "cw_l2", "cw_linf",
    "deepfool", "detector_joint", "eot", "exact_eot", "fgm", "fgsm", "from_config",
    "get_attack", "get_system_attack", "illc", "lbfgs", "list_attacks", "list_system_attacks", "ls_pga", "mi_fgsm",
    "one_pixel", "pgd", "rfgsm", "specialists_targeted", "spsa", "square", "trades_kl", "transfer",
    "with_straight_through",
    "EAGER_ONLY",
]

# Attacks whose outer loop runs on the host (NumPy binary searches over c,
# SciPy's L-BFGS-B, the differential evolution's bookkeeping, and the
# query loops of Square and SPSA, which query only the examples not yet
# broken, a batch whose size changes, which jax.jit cannot compile): they
# must be called eagerly, not inside a `tf.function` / `jax.jit` (their
# inner steps are still compiled). Every other attack can be traced into a
# graph, e.g. a training step; `evaluation.robust_accuracy(eager=True)`
# runs these.
EAGER_ONLY = frozenset({"cw_l2", "cw_linf", "cw_l0", "lbfgs", "one_pixel",
                        "square", "spsa"})


def get_attack(name: str) -> Callable[..., Any]:
    """The attack function registered as `name`.

    Raises:
        KeyError: unknown name; the message lists `list_attacks()`.
    """
    return ATTACKS.get(name)


def list_attacks(pattern: str = "*") -> list[str]:
    """Registered attack names matching the fnmatch `pattern`."""
    return ATTACKS.names(pattern)


def get_system_attack(name: str) -> Callable[..., Any]:
    """The detection-system attack registered as `name` ("detector_joint",
    "specialists_targeted"): `fn(system, x, y, **kwargs) -> x_adv`.

    Raises:
        KeyError: unknown name; the message lists the registered ones.
    """
    return SYSTEM_ATTACKS.get(name)


def list_system_attacks(pattern: str = "*") -> list[str]:
    """Registered detection-system attack names matching `pattern`."""
    return SYSTEM_ATTACKS.names(pattern)


def from_config(config: Mapping[str, Any]) -> Callable[..., Any]:
    """Binds an attack config, e.g. `{"name": "pgd", "eps": 0.1, ...}`.

    Returns:
        `fn(model, x, y) -> x_adv` with every other argument taken from
        `config` (an `ml_collections.ConfigDict` or a dict).

    Raises:
        KeyError: unknown attack name.
        TypeError: a config key that the attack does not accept.
    """
    kwargs = dict(config)
    name = kwargs.pop("name")
    fn = get_attack(name)
    # Fail now, not at the first training step, on a misspelt key.
    params = inspect.signature(fn).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise TypeError(
                f"attack {name!r} got unknown arguments {unknown}; accepted: "
                f"{sorted(k for k in params if k not in ('model', 'x', 'y'))}"
            )
    return functools.partial(fn, **kwargs)
