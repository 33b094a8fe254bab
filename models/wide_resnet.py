"""Wide ResNets (wrn28_10, wrn34_10) for 32x32 (or 28x28) images.

Zagoruyko & Komodakis 2016, "Wide Residual Networks", arXiv 1605.07146,
Table 1 and Sec. 2: a 3x3 conv with 16 filters, then three stages of `n`
pre-activation basic blocks (BN-ReLU-conv3x3, BN-ReLU-conv3x3; He et al. 2016,
arXiv 1603.05027) with 16k, 32k and 64k filters (stride 2 at the start of
stages 2 and 3), a final BN-ReLU, global average pool and the classifier;
depth `6n + 4`. Where a block changes the shape, the shortcut is a 1x1 conv
applied to the block's pre-activated input (as in the authors' code), else
it is the identity. The paper's optional dropout is left out, as in the
adversarial-training WRN-34-10 of TRADES (Zhang et al. 2019, arXiv
1901.08573). Convs have no bias; BN epsilon 1e-5, momentum 0.9.

Trainable parameters with 10 classes: wrn28_10 36,479,194 and wrn34_10
46,160,474 (the paper reports 36.5M for WRN-28-10).

Layer names: "stem_conv",
"stage{1..3}_block{i}_{bn1,relu1,conv1,bn2,relu2,conv2,shortcut_conv,out}",
"final_bn", "final_relu", "avg_pool", "logits".
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

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


def preact_block(x, *, filters: int, strides: int, name: str):
    """Pre-activation basic block with `filters` output channels."""
    pre = batch_norm(x, f"{name}_bn1")
    pre = keras.layers.ReLU(name=f"{name}_relu1")(pre)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(pre, filters, 1, strides, f"{name}_shortcut_conv")
    else:
        shortcut = x
    y = conv(pre, filters, 3, strides, f"{name}_conv1")
    y = batch_norm(y, f"{name}_bn2")
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = conv(y, filters, 3, 1, f"{name}_conv2")
    return keras.layers.Add(name=f"{name}_out")([shortcut, y])


def wrn_stage(x, *, num_blocks: int, filters: int, strides: int, name: str):
    """`num_blocks` pre-activation blocks `{name}_block1..N`."""
    for i in range(num_blocks):
        x = preact_block(
            x,
            filters=filters,
            strides=strides if i == 0 else 1,
            name=f"{name}_block{i + 1}",
        )
    return x


def build_wide_resnet(
    *,
    name: str,
    num_classes: int,
    default_blocks: Sequence[int],
    input_shape: Sequence[int] | None = None,
    width: int = 16,
    blocks: Sequence[int] | None = None,
    widen_factor: int = 10,
    mean: Stats = CIFAR10_MEAN,
    std: Stats = CIFAR10_STD,
) -> keras.Model:
    """Builds a WRN-(6n+4)-k of Zagoruyko & Komodakis 2016, Table 1.

    Args:
        name: the model name.
        num_classes: number of logits.
        default_blocks: blocks per stage (3 ints) when `blocks` is None.
        input_shape: `(height, width, channels)`; default `(32, 32, 3)`.
            `(28, 28, 1)` (Fashion-MNIST) works with scalar mean/std.
        width: base width: the stem has `width` filters and the stages
            `width * widen_factor * (1, 2, 4)` (16 in the paper).
        blocks: blocks per stage, overriding `default_blocks`.
        widen_factor: the paper's k.
        mean: per-channel mean on the [0, 1] scale (scalar or one per
            channel), or None for no normalization layer.
        std: per-channel standard deviation on the [0, 1] scale.

    Returns:
        A Functional `keras.Model` mapping float32 images in [0, 1] of shape
        `(batch, height, width, channels)` to float32 logits
        `(batch, num_classes)`.

    Raises:
        ValueError: for a non-positive `num_classes`, `width` or
            `widen_factor`, a bad `blocks`, or mean/std that do not match the
            input channels.
    """
    blocks = stage_blocks(blocks, default_blocks)
    for value, what in (
        (num_classes, "num_classes"),
        (width, "width"),
        (widen_factor, "widen_factor"),
    ):
        check_positive_int(value, what)
    inputs, x = model_input(input_shape or (32, 32, 3), mean, std)
    x = conv(x, width, 3, 1, "stem_conv")
    for i, num_blocks in enumerate(blocks):
        x = wrn_stage(
            x,
            num_blocks=num_blocks,
            filters=width * widen_factor * 2**i,
            strides=1 if i == 0 else 2,
            name=f"stage{i + 1}",
        )
    x = batch_norm(x, "final_bn")
    x = keras.layers.ReLU(name="final_relu")(x)
    return keras.Model(inputs, logits_head(x, num_classes), name=name)


@register_model("wrn28_10")
def wrn28_10(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int] | None = None,
    width: int = 16,
    blocks: Sequence[int] | None = None,
    widen_factor: int = 10,
    mean: Stats = CIFAR10_MEAN,
    std: Stats = CIFAR10_STD,
) -> keras.Model:
    """WRN-28-10 (n = 4); args, returns, errors as in `build_wide_resnet`."""
    return build_wide_resnet(
        name="wrn28_10",
        default_blocks=(4, 4, 4),
        num_classes=num_classes,
        input_shape=input_shape,
        width=width,
        blocks=blocks,
        widen_factor=widen_factor,
        mean=mean,
        std=std,
    )


@register_model("wrn34_10")
def wrn34_10(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int] | None = None,
    width: int = 16,
    blocks: Sequence[int] | None = None,
    widen_factor: int = 10,
    mean: Stats = CIFAR10_MEAN,
    std: Stats = CIFAR10_STD,
) -> keras.Model:
    """WRN-34-10 (n = 5); args, returns, errors as in `build_wide_resnet`."""
    return build_wide_resnet(
        name="wrn34_10",
        default_blocks=(5, 5, 5),
        num_classes=num_classes,
        input_shape=input_shape,
        width=width,
        blocks=blocks,
        widen_factor=widen_factor,
        mean=mean,
        std=std,
    )
