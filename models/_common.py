"""Pieces shared by every model family: the registry, input, head, conv/BN.

Every model built here follows one contract (Madry et al. 2018, arXiv
1706.06083, keep the preprocessing inside the model so attacks work in pixel
space): the input is float32 `(batch, height, width, channels)` in [0, 1], the
first layer is an optional `keras.layers.Normalization` named "normalize", and
the output is float32 logits `(batch, num_classes)` from a Dense layer named
"logits" (no softmax).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras

from core.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register

# Statistics of the training sets on the [0, 1] scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# He et al. 2015 (arXiv 1502.01852) init with fan_out, as torchvision's ResNet
# and the feature-denoising reference code use for every conv.
CONV_INIT = keras.initializers.VarianceScaling(
    scale=2.0, mode="fan_out", distribution="untruncated_normal"
)
# BN constants of torchvision / tensorpack (Keras defaults are 1e-3 and 0.99).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

Stats = float | Sequence[float] | None


def conv(
    x, filters: int, kernel_size: int, strides: int, name: str, groups: int = 1
):
    """3x3 or 1x1 conv with `padding='same'`, no bias and He fan_out init."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        groups=groups,
        use_bias=False,
        kernel_initializer=CONV_INIT,
        name=name,
    )(x)


def batch_norm(x, name: str, zero_gamma: bool = False):
    """BatchNormalization with epsilon 1e-5, momentum 0.9.

    `zero_gamma=True` starts gamma at 0 so that a residual branch ending in it
    is the identity at init (Goyal et al. 2017, arXiv 1706.02677, Sec. 5.1).
    """
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )(x)


def _as_floats(value: float | Sequence[float], what: str) -> list[float]:
    if isinstance(value, numbers.Real):
        return [float(value)]
    try:
        return [float(v) for v in value]
    except TypeError:
        raise ValueError(
            f"{what} must be a number or a sequence of numbers; got {value!r}"
        ) from None


def model_input(
    input_shape: Sequence[int],
    mean: Stats,
    std: Stats,
    input_defenses: Sequence[keras.layers.Layer] = (),
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Makes the [0, 1] image input and the optional normalization layer.

    Args:
        input_shape: `(height, width, channels)`, channels last.
        mean: per-channel means on the [0, 1] scale (a scalar or one value per
            channel), or None for no normalization layer.
        std: per-channel standard deviations, same form as `mean`; None
            exactly when `mean` is None.
        input_defenses: layers applied to the [0, 1] input before the
            normalization; when they change the channel count (thermometer
            encoding) the normalization is skipped, their output already
            being in [0, 1] bits.

    Returns:
        `(inputs, x)`: the float32 `keras.Input` of shape
        `(batch, height, width, channels)` and the tensor after the
        `Normalization` layer named "normalize", i.e. `(inputs - mean) / std`
        (or `inputs` itself when `mean` is None).

    Raises:
        ValueError: if `input_shape` is not three positive ints, if only one
            of `mean` / `std` is None, if `std` has a non-positive entry, or if
            the length of `mean` or `std` is neither 1 nor `channels`.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(d, numbers.Integral) and d > 0 for d in shape
    ):
        raise ValueError(
            "input_shape must be (height, width, channels) with positive ints; "
            f"got {input_shape!r}"
        )
    shape = tuple(int(d) for d in shape)
    inputs = keras.Input(shape=shape, dtype="float32", name="x")
    if (mean is None) != (std is None):
        raise ValueError(
            f"mean and std must both be set or both be None; got mean={mean!r}"
            f", std={std!r}"
        )
    x = inputs
    for layer in input_defenses:
        x = layer(x)
    if mean is None or x.shape[-1] != shape[-1]:
        return inputs, x
    channels = shape[-1]
    mean_list, std_list = _as_floats(mean, "mean"), _as_floats(std, "std")
    for what, values in (("mean", mean_list), ("std", std_list)):
        if len(values) not in (1, channels):
            raise ValueError(
                f"{what} has {len(values)} values ({values}) but the input has "
                f"{channels} channel(s) (input_shape={shape}); give 1 or "
                f"{channels} values"
            )
    if min(std_list) <= 0:
        raise ValueError(f"std must be positive; got {std_list}")
    variance = [s**2 for s in std_list]
    if len(mean_list) == len(variance) == 1:
        # A scalar pair, broadcast over the channels by the layer.
        mean_arg, variance_arg = mean_list[0], variance[0]
    else:
        # The layer needs equal shapes: repeat a single value per channel.
        mean_arg = mean_list * (channels // len(mean_list))
        variance_arg = variance * (channels // len(variance))
    x = keras.layers.Normalization(
        mean=mean_arg, variance=variance_arg, name="normalize"
    )(x)
    return inputs, x


def logits_head(x, num_classes: int) -> keras.KerasTensor:
    """Global average pool, then the float32 Dense layer named "logits"."""
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return dense_logits(x, num_classes)


def dense_logits(x, num_classes: int) -> keras.KerasTensor:
    """Dense layer named "logits"; float32 even under a mixed policy."""
    return keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)


def check_positive_int(value: int, what: str) -> int:
    """Returns `value` if it is an int >= 1, else raises `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int; got {value!r}")
    return value


def stage_blocks(
    blocks: Sequence[int] | None, default: Sequence[int]
) -> tuple[int, ...]:
    """Per-stage block counts: `blocks` if given, else `default`.

    Raises:
        ValueError: if `blocks` does not have one positive int per stage.
    """
    if blocks is None:
        return tuple(default)
    blocks = tuple(blocks)
    if len(blocks) != len(default) or not all(
        isinstance(b, int) and not isinstance(b, bool) and b >= 1
        for b in blocks
    ):
        raise ValueError(
            f"blocks must be {len(default)} positive ints (one per stage, "
            f"default {tuple(default)}); got {blocks!r}"
        )
    return blocks
