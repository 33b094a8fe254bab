"""Expectation over Transformation (EOT) wrapper for randomized models.

`eot(model, samples)` returns a callable whose logits are the mean of the
logits of `samples` forward passes of a randomized `model`; its input
gradient is therefore the mean of the per-draw gradients, the Monte-Carlo
EOT estimator of the gradient of the expected loss surrogate

    grad_x E_{t ~ T}[f(t(x))] ~= (1/k) sum_i grad_x f(t_i(x)).

(Averaging logits, rather than losses or probabilities, is the usual
practical choice and keeps the wrapper a drop-in "model" for every attack.)

Any attack of this library composes with it, e.g.

    x_adv = pgd(eot(model, 8), x, y, eps=8 / 255, step_size=2 / 255, steps=20)

Randomness per draw:
    `batched=False` (the default) calls `model` `samples` times in a loop:
    each call is a fresh draw for every randomized layer, whatever its
    granularity, so it is a true EOT for every layer of this library.
    `batched=True` tiles the batch `samples` times into ONE forward pass
    (faster, more memory). That is a true EOT only when every randomized
    layer draws independently per example (e.g. StochasticActivationPruning,
    which samples per row); layers that draw once per call and share the draw
    across the batch (RandomResizePad) would give the SAME transformation to
    all copies, so the average would be a single draw. `batched=True` is
    refused (ValueError) for a Keras model containing such a layer (a layer
    with `randomized = True` and a `draw_params` method, i.e. a per-batch
    draw); other callables are trusted.

References:
    Athalye, Engstrom, Ilyas, Kwok 2018, "Synthesizing Robust Adversarial
    Examples", ICML, arXiv 1707.07397, Eq. 1 (EOT).
    Athalye, Carlini, Wagner 2018, "Obfuscated Gradients Give a False Sense
    of Security", ICML, arXiv 1802.00420, Sec. 4.3 (EOT against randomized
    defenses).
"""

from __future__ import annotations

from typing import Any, Callable

import keras
from keras import ops

from core.keras_internals import flatten_layers


def _call(model: Callable, x: Any, training: bool) -> Any:
    if isinstance(model, keras.layers.Layer):
        return model(x, training=training)
    return model(x)


def _per_batch_random_layers(model: Callable) -> list[str]:
    """Names of sublayers that draw one transformation per call (batch)."""
    if not isinstance(model, keras.layers.Layer):
        return []
    found = []
    for layer in [model] + flatten_layers(model, include_self=False):
        if (getattr(layer, "randomized", False)
                and getattr(layer, "active", True)
                and hasattr(layer, "draw_params")):
            found.append(layer.name)
    return found


class EOTModel:
    """Callable `f(x, training=False)` -> mean logits over `eot_samples`
    draws of `wrapped`; built by `eot`. Not a Keras layer, so the attacks'
    `call_model` calls it as `f(x)`.

    Attributes:
        wrapped: the randomized model.
        eot_samples: number of draws averaged per call.
        batched: whether the draws run as one tiled forward pass.
    """

    def __init__(self, model: Callable, samples: int, batched: bool):
        self.wrapped = model
        self.eot_samples = int(samples)
        self.batched = bool(batched)

    def __call__(self, x, training: bool = False) -> Any:
        x = ops.convert_to_tensor(x)
        k = self.eot_samples
        if k == 1:
            return _call(self.wrapped, x, training)
        if self.batched:
            tiled = ops.tile(x, (k,) + (1,) * (len(x.shape) - 1))
            logits = _call(self.wrapped, tiled, training)
            logits = ops.reshape(
                logits, (k, ops.shape(x)[0]) + tuple(ops.shape(logits)[1:]))
            return ops.mean(logits, axis=0)
        total = _call(self.wrapped, x, training)
        for _ in range(k - 1):
            total = total + _call(self.wrapped, x, training)
        return total / ops.cast(k, total.dtype)

    def __repr__(self) -> str:
        return (f"EOTModel(wrapped={self.wrapped!r}, "
                f"eot_samples={self.eot_samples}, batched={self.batched})")


def eot(model: Callable, samples: int = 20, *,
        batched: bool = False) -> EOTModel:
    """Wraps a randomized `model` for Expectation over Transformation.

    Args:
        model: callable `x -> logits (batch, classes)`; a Keras layer/model
            is called with `training` (default False).
        samples: int >= 1, number of independent forward passes averaged.
        batched: False (default) loops over the draws, a true EOT for any
            randomized layer; True tiles the batch into one pass, valid only
            for layers that draw per example (see the module docstring).

    Returns:
        An `EOTModel`: `f(x, training=False)` returning the mean logits, with
        attributes `wrapped`, `eot_samples` and `batched`. Its gradient is the
        mean of the per-draw gradients.

    Raises:
        ValueError: `samples` not an int >= 1, `batched` not a bool, or
            `batched=True` with a Keras model holding a layer that draws once
            per batch (e.g. RandomResizePad); the message names the value.

    Example:
        >>> x_adv = pgd(eot(model, 8), x, y, eps=8 / 255,
        ...             step_size=2 / 255, steps=20)
    """
    if (isinstance(samples, bool) or not isinstance(samples, int)
            or samples < 1):
        raise ValueError(f"samples must be an int >= 1; got {samples!r}")
    if not isinstance(batched, bool):
        raise ValueError(f"batched must be True or False; got {batched!r}")
    if not callable(model):
        raise ValueError(f"model must be callable; got {model!r}")
    if batched:
        shared = _per_batch_random_layers(model)
        if shared:
            raise ValueError(
                "batched=True needs layers that draw per example; "
                f"{shared} draw once per batch; use batched=False")
    return EOTModel(model, samples, batched)
