"""CIFAR-style ResNets (resnet20, resnet56) for 32x32 (or 28x28) images.

He, Zhang, Ren & Sun 2016, arXiv 1512.03385, Sec. 4.2 and Table 6: a 3x3 conv
with 16 filters, then three stages of `n` basic blocks with 16, 32 and 64
filters (the first block of stages 2 and 3 has stride 2), global average
pool and the classifier; depth `6n + 2`. Every shortcut is parameter-free
("option A"): identity, or strided subsampling plus zero channel padding
where the shape changes, so the residual nets have the plain nets' parameter
count. The basic block is the one of `models.resnet` (BN epsilon 1e-5,
momentum 0.9, no conv bias, its last BN gamma starts at 0, following Goyal et
al. 2017, arXiv 1706.02677, Sec. 5.1, rather than He et al.'s gamma = 1).

Trainable parameters with 10 classes: resnet20 269,722 and resnet56 853,018
(Table 6 gives 0.27M and 0.85M). A 1x1-conv projection shortcut (option B)
would add 2,752 (272,474 and 855,770).

Layer names: "stem_conv", "stem_bn", "stem_relu",
"stage{1..3}_block{i}_{conv1,bn1,relu1,conv2,bn2,shortcut,add,out}",
"avg_pool", "logits".
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from models._common import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Stats,
    batch_norm,
    check_positive_int,
    conv,
    logits_head,
    model_input,
    register_model,
    stage_blocks,
)
from models.defense_hooks import (
    check_denoise,
    check_sap,
    input_defense_layers,
    sap_after,
)
from models.resnet import basic_block, resnet_stage


@keras.saving.register_keras_serializable(package="robust_recipes")
class SubsampleChannelPad(keras.layers.Layer):
    """Option-A shortcut: keeps every `strides`-th pixel, zero-pads channels.

    He et al. 2016, arXiv 1512.03385, Sec. 3.3 (A) and Sec. 4.2. Has no
    weights. The new channels are appended after the existing ones.

    Args:
        strides: spatial subsampling factor (int >= 1); an odd size `h` gives
            `ceil(h / strides)`, as a 'same'-padded strided conv does.
        channels: output channels, at least the input channels.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: `(batch, height, width, in_channels)` tensor of any float
            dtype.

    Returns:
        `(batch, ceil(height / strides), ceil(width / strides), channels)`,
        same dtype.

    Raises:
        ValueError: if `strides` or `channels` is not a positive int, or (when
            built) `channels` is below the input channels.
    """

    def __init__(self, strides, channels, **kwargs):
        super().__init__(**kwargs)
        self.strides = check_positive_int(strides, "strides")
        self.channels = check_positive_int(channels, "channels")

    def build(self, input_shape):
        if input_shape[-1] > self.channels:
            raise ValueError(
                f"channels={self.channels} is below the input channels "
                f"{input_shape[-1]}"
            )

    def call(self, inputs):
        s = self.strides
        x = inputs[:, ::s, ::s, :]
        extra = self.channels - inputs.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])

    def compute_output_shape(self, input_shape):
        def sub(d):
            return None if d is None else -(-d // self.strides)

        return (
            input_shape[0],
            sub(input_shape[1]),
            sub(input_shape[2]),
            self.channels,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"strides": self.strides, "channels": self.channels})
        return config


def option_a_shortcut(x, filters: int, strides: int, name: str):
    """Parameter-free shortcut for `basic_block` (see `SubsampleChannelPad`)."""
    return SubsampleChannelPad(strides, filters, name=f"{name}_shortcut")(x)


def build_cifar_resnet(
    *,
    name: str,
    num_classes: int,
    default_blocks: Sequence[int],
    input_shape: Sequence[int] | None = None,
    width: int = 16,
    blocks: Sequence[int] | None = None,
    mean: Stats = CIFAR10_MEAN,
    std: Stats = CIFAR10_STD,
    denoise: dict | None = None,
    input_defenses: Sequence | None = None,
    sap: dict | None = None,
) -> keras.Model:
    """Builds a CIFAR ResNet of He et al. 2016, Sec. 4.2.

    Args:
        name: the model name.
        num_classes: number of logits.
        default_blocks: blocks per stage (3 ints) when `blocks` is None.
        input_shape: `(height, width, channels)`; default `(32, 32, 3)`.
            `(28, 28, 1)` (Fashion-MNIST) works with scalar mean/std.
        width: filters of the stem and stage 1; stages 2, 3 use 2x and 4x
            (16 in the paper; smoke tests use 8).
        blocks: blocks per stage, overriding `default_blocks`.
        mean: per-channel mean on the [0, 1] scale (scalar or one per
            channel), or None for no normalization layer.
        std: per-channel standard deviation on the [0, 1] scale.
        denoise, input_defenses, sap: defense hook points, see
            `models.defense_hooks` (stages are numbered 1-3 here).

    Returns:
        A Functional `keras.Model` mapping float32 images in [0, 1] of shape
        `(batch, height, width, channels)` to float32 logits
        `(batch, num_classes)`.

    Raises:
        ValueError: for a non-positive `num_classes` or `width`, a bad
            `blocks`, or mean/std that do not match the input channels.
    """
    blocks = stage_blocks(blocks, default_blocks)
    check_positive_int(num_classes, "num_classes")
    check_positive_int(width, "width")
    denoise = check_denoise(denoise)
    sap = check_sap(sap, range(1, 1 + len(blocks)))
    inputs, x = model_input(input_shape or (32, 32, 3), mean, std,
                            input_defense_layers(input_defenses))
    x = conv(x, width, 3, 1, "stem_conv")
    x = batch_norm(x, "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for i, num_blocks in enumerate(blocks):
        x = resnet_stage(
            x,
            block_fn=basic_block,
            num_blocks=num_blocks,
            strides=1 if i == 0 else 2,
            name=f"stage{i + 1}",
            filters=width * 2**i,
            shortcut=option_a_shortcut,
            denoise=denoise,
        )
        x = sap_after(x, sap, i + 1)
    return keras.Model(inputs, logits_head(x, num_classes), name=name)


@register_model("resnet20")
def resnet20(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int] | None = None,
    width: int = 16,
    blocks: Sequence[int] | None = None,
    mean: Stats = CIFAR10_MEAN,
    std: Stats = CIFAR10_STD,
    denoise: dict | None = None,
    input_defenses: Sequence | None = None,
    sap: dict | None = None,
) -> keras.Model:
    """ResNet-20 (n = 3); args, returns, errors as in `build_cifar_resnet`."""
    return build_cifar_resnet(
        name="resnet20",
        default_blocks=(3, 3, 3),
        num_classes=num_classes,
        input_shape=input_shape,
        width=width,
        blocks=blocks,
        mean=mean,
        std=std,
        denoise=denoise,
        input_defenses=input_defenses,
        sap=sap,
    )


@register_model("resnet56")
def resnet56(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int] | None = None,
    width: int = 16,
    blocks: Sequence[int] | None = None,
    mean: Stats = CIFAR10_MEAN,
    std: Stats = CIFAR10_STD,
    denoise: dict | None = None,
    input_defenses: Sequence | None = None,
    sap: dict | None = None,
) -> keras.Model:
    """ResNet-56 (n = 9); args, returns, errors as in `build_cifar_resnet`."""
    return build_cifar_resnet(
        name="resnet56",
        default_blocks=(9, 9, 9),
        num_classes=num_classes,
        input_shape=input_shape,
        width=width,
        blocks=blocks,
        mean=mean,
        std=std,
        denoise=denoise,
        input_defenses=input_defenses,
        sap=sap,
    )
