"""Turns a loaded checkpoint into the network a recipe fine-tunes: new
input size, new head when the class count differs, frozen stages.

The usual transfer-learning recipe (Yosinski et al. 2014, arXiv 1411.1792;
for robust features, Salman et al. 2020, arXiv 2007.08489): every layer
keeps its weights except the classifier, which is replaced (fresh Glorot
init, zero bias) when the new task has another number of classes; layers
named in `freeze` stop training (BatchNormalization then also runs on its
moving statistics, as Keras 3 does for a frozen BN layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def _head(model: keras.Model) -> keras.layers.Layer:
    """The classifier: the layer named "logits" (our models) or the last
    layer (Keras Applications), which must be a Dense layer."""
    names = [layer.name for layer in model.layers]
    head = model.get_layer("logits") if "logits" in names else model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise ValueError(f"{model.name}: the classifier must be a Dense "
                         f"layer named 'logits' or the last layer; got "
                         f"{type(head).__name__} {head.name!r}")
    return head


def _stage_prefixes(model: keras.Model) -> list[str]:
    return sorted({layer.name.split("_")[0] for layer in model.layers})


def adapt(model: keras.Model, *, input_shape: Sequence[int],
          num_classes: int, freeze: Sequence[str] = ()) -> keras.Model:
    """The model re-built for `input_shape`, with a `num_classes` head.

    Args:
        model: a Functional model from `checkpoints.load` (our contract:
            [0, 1] input, logits out, no Flatten before the head, so any
            spatial size works).
        input_shape: `(height, width, channels)` of the new data; the
            channel count must equal the checkpoint's (give grayscale data
            3 channels with the recipe's `data.channels=3`).
        num_classes: logits of the new task; a different count than the
            checkpoint's replaces the head by a fresh Dense "logits".
        freeze: layer-name prefixes to freeze, e.g. ("stem", "stage2") for
            the stem and the first residual stage of our ResNets.

    Returns:
        A new Functional model; every layer but a replaced head carries the
        checkpoint's weights.

    Raises:
        ValueError: a channel-count mismatch, a non-positive
            `num_classes`, a `freeze` prefix that matches no layer (the
            message lists the model's name prefixes), or a model whose
            classifier is not a Dense layer.
    """
    input_shape = tuple(int(d) for d in input_shape)
    old_shape = tuple(model.input_shape[1:])
    if input_shape[-1] != old_shape[-1]:
        raise ValueError(
            f"the checkpoint takes {old_shape[-1]}-channel images, the data "
            f"has {input_shape[-1]} (input_shape={input_shape}); for "
            "grayscale data set the recipe's data.channels=3")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got "
                         f"{num_classes!r}")
    if input_shape != old_shape:
        rebuilt = keras.models.clone_model(
            model, input_tensors=keras.Input(input_shape, name="x"))
        rebuilt.set_weights(model.get_weights())
        model = rebuilt
    head = _head(model)
    if head.units != num_classes:
        features = head.input
        logits = keras.layers.Dense(num_classes, name="logits",
                                    dtype="float32")(features)
        model = keras.Model(model.inputs, logits, name=model.name)
    for prefix in freeze:
        hits = [layer for layer in model.layers
                if layer.name.startswith(prefix)]
        if not hits:
            raise ValueError(f"freeze prefix {prefix!r} matches no layer; "
                             f"the model's prefixes: "
                             f"{_stage_prefixes(model)}")
        for layer in hits:
            layer.trainable = False
    return model
