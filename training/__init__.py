"""The training layer: adversarial trainers (one module per method), losses,
LR schedules and optimizers, callbacks, and the `tf.distribute` strategy
switch. It sits above `attacks/` and below train.py / evaluate.py.

A recipe names its method in `train.method`; `build_trainer` looks it up in
`METHODS`, a registry that each method module fills with
`@register_method(name)` on its builder (Model Garden's task registry):

    builder(cfg, net, teacher=None) -> (model, loss, metrics)

`cfg` is the recipe's `ml_collections.ConfigDict`, `net` the network to
train (float32 `(batch, height, width, channels)` in `[0, 1]` -> logits
`(batch, classes)`), `teacher` the trained first-stage network of a
two-stage method (defensive distillation) or None; `model` is the
`keras.Model` that `fit()` trains, compiled with `loss` and `metrics`.

The method modules are imported on first use, not with this package, so
that `import training.distribute` (which train.py needs before any other
TensorFlow op runs) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from core.registry import Registry

METHODS = Registry("training method")
register_method = METHODS.register

# Each module registers its builder(s) when imported.
_METHOD_MODULES = ("adversarial", "distillation", "free_at", "trades",
                   "ensemble_at", "thermometer_at")


def _load_methods() -> None:
    for module in _METHOD_MODULES:
        importlib.import_module(f"training.{module}")


def list_methods() -> list[str]:
    """The registered `train.method` names, sorted."""
    _load_methods()
    return METHODS.names()


def get_method(name: str) -> Callable[..., Any]:
    """The builder registered as `name`.

    Raises:
        KeyError: unknown name; the message lists `list_methods()`.
    """
    _load_methods()
    return METHODS.get(name)


def build_trainer(cfg, net, teacher=None) -> tuple[Any, Any, list]:
    """`(model, loss, metrics)` of the method `cfg.train.method` around
    `net` (module doc). Each method reads its own fields of `cfg`.

    Raises:
        ValueError: unknown method; the message lists the registered ones.
    """
    method = cfg.train.method
    try:
        builder = get_method(method)
    except KeyError:
        raise ValueError(f"train.method must be one of {list_methods()}; "
                         f"got {method!r}") from None
    return builder(cfg, net, teacher=teacher)
