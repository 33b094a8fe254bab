"""The MNIST challenge CNN of Madry et al. 2018.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models
Resistant to Adversarial Attacks", arXiv 1706.06083, the MNIST network of
Sec. 5 and of MadryLab's `mnist_challenge` (`model.py`): conv 5x5 32 'same'
+ ReLU, 2x2 max-pool, conv 5x5 64 'same' + ReLU, 2x2 max-pool, flatten,
dense 1024 + ReLU, dense logits. Layers keep their biases. Inputs are used
as given (no normalization by default), as in the original model. 3,274,634
trainable parameters with 10 classes at 28x28x1.

Initialization is Keras's default (Glorot uniform, zero bias), not the
original TF1 code's truncated normal (sigma 0.1) with bias 0.1.

Layer names: "conv1", "pool1", "conv2", "pool2", "flatten", "fc", "logits"
("normalize" first when `mean` is set, after any `input_defenses`).
"""

from __future__ import annotations

import keras

from models.defense_hooks import input_defense_layers
from models._common import (
    Stats,
    check_positive_int,
    dense_logits,
    model_input,
    register_model,
)


@register_model("madry_cnn")
def madry_cnn(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int] | None = None,
    width: int = 32,
    mean: Stats = None,
    std: Stats = None,
    input_defenses=None,
) -> keras.Model:
    """Madry et al.'s MNIST CNN, with all widths scaled by `width / 32`.

    Scaling every layer together mirrors the paper's capacity study (Sec. 4:
    2s and 4s filters and a 64s-unit dense layer at scale s; s = 16 here).

    Args:
        num_classes: number of logits.
        input_shape: `(height, width, channels)`; default `(28, 28, 1)`.
        width: filters of the first conv (32 in the paper); the second conv
            has `2 * width` filters and the hidden dense layer `32 * width`
            units (1024 in the paper), so smoke tests with `width=8` are
            small throughout.
        mean: per-channel mean on the [0, 1] scale (scalar or one per
            channel), or None (the default) for no normalization layer.
        std: per-channel standard deviation; None exactly when `mean` is.
        input_defenses: None, or layers / Keras layer configs applied to the
            [0, 1] input first (e.g. `[{"class_name": "ThermometerEncoding",
            "config": {"levels": 16}}]`, Buckman et al. 2018); see
            `models.defense_hooks.input_defense_layers`.

    Returns:
        A Functional `keras.Model` mapping float32 images in [0, 1] of shape
        `(batch, height, width, channels)` to float32 logits
        `(batch, num_classes)`.

    Raises:
        ValueError: for a non-positive `num_classes` or `width`, mean/std
            that do not match the input channels, or an input defense that
            is not a defense layer of `layers/`.
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(width, "width")
    inputs, x = model_input(input_shape or (28, 28, 1), mean, std,
                            input_defense_layers(input_defenses))
    for i, filters in enumerate((width, 2 * width), start=1):
        x = keras.layers.Conv2D(
            filters, 5, padding="same", activation="relu", name=f"conv{i}"
        )(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32 * width, activation="relu", name="fc")(x)
    return keras.Model(inputs, dense_logits(x, num_classes), name="madry_cnn")
