"""EOT with the exact expectation, for a randomized input transformation
with few patterns.

EOT (Athalye, Engstrom, Ilyas & Kwok 2018, arXiv 1707.07397, Eq. 1)
estimates `E_{t ~ T}[f(t(x))]` and its gradient by sampling. When the
defense draws from a small finite set, as `RandomResizePad` does at small
image sizes (28 -> [28, 32) -> 32 has 54 patterns), the expectation can be
computed exactly instead:

    f_T(x) = sum_k p_k f(t_k(x)),

so the attack follows the true gradient of the expected logits, with no
sampling noise, and the prediction is that of infinitely many draws. This is
the strongest form of the EOT attack of Athalye, Carlini & Wagner 2018
(arXiv 1802.00420, Sec. 4.3) on such a defense; the sampled `eot` is the
choice when the set is large (12,528 patterns at ImageNet size).
"""

from __future__ import annotations

from typing import Any, Callable

import keras
from keras import ops

from layers.random_resize_pad import RandomResizePad

#: Patterns above which `exact_eot` refuses (use the sampled `eot`).
MAX_PATTERNS = 512


def exact_eot(model: keras.Model, *, max_patterns: int = MAX_PATTERNS
              ) -> Callable[..., Any]:
    """The exact expectation of a Functional model's logits over the
    patterns of its one active `RandomResizePad` layer.

    Args:
        model: a Functional `keras.Model` whose only active randomized layer
            is a `RandomResizePad` that cuts the graph in two (every path
            from the input to the output goes through it, as for an input
            defense).
        max_patterns: refuse layers with more patterns than this.

    Returns:
        `fn(x, training=False)`: x float32 `(batch, H, W, C)` in [0, 1] ->
        float32 `(batch, num_classes)`, `sum_k p_k model_k(x)` where
        `model_k` is the model with the layer fixed to pattern k and `p_k`
        its probability (`RandomResizePad.patterns`). One forward pass runs
        the batch through every pattern (batch x patterns examples), so
        memory grows with the number of patterns.

    Raises:
        ValueError: the model has no active `RandomResizePad`, more than
            one active randomized layer, or more than `max_patterns`
            patterns (the message gives the count and suggests `eot`).
    """
    from attacks.adaptive import threat_model

    randomized = threat_model(model)["randomized"]
    layers = [layer for layer in model.layers
              if isinstance(layer, RandomResizePad) and layer.active]
    if len(layers) != 1 or len(randomized) != 1:
        raise ValueError(
            "exact_eot needs exactly one active randomized layer, a "
            f"RandomResizePad; {model.name!r} has randomized layers "
            f"{randomized}")
    layer = layers[0]
    patterns = layer.patterns()
    if len(patterns) > max_patterns:
        raise ValueError(
            f"{layer.name!r} has {len(patterns)} patterns > max_patterns="
            f"{max_patterns}; use the sampled attacks.eot(model, samples)")
    head = keras.Model(model.inputs, layer.input)
    tail = keras.Model(layer.output, model.outputs)
    probs = ops.convert_to_tensor([p for *_, p in patterns], "float32")

    def fn(x, training: bool = False) -> Any:
        z = head(x, training=training)
        views = [layer.transform(z, rnd, top, left)
                 for rnd, top, left, _ in patterns]
        logits = tail(ops.concatenate(views, 0), training=training)
        logits = ops.reshape(logits,
                             (len(patterns), ops.shape(z)[0], -1))
        return ops.einsum("k,kbc->bc", probs, logits)

    return fn
