"""ImageNet ResNet v1.5 and ResNeXt, built with the Keras Functional API.

ResNet: He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image
Recognition", arXiv 1512.03385, Table 1 (depths 18-152) and Fig. 5 (basic and
bottleneck blocks). "v1.5" puts the stride of a bottleneck block on its 3x3
conv instead of the first 1x1 conv, as torchvision, NVIDIA's reference and the
feature-denoising code (Xie et al. 2019, arXiv 1812.03411) do.

ResNeXt: Xie, Girshick, Dollar, Tu & He 2017, "Aggregated Residual
Transformations for Deep Neural Networks", arXiv 1611.05431, Table 1 and
Fig. 3(c): the bottleneck's 3x3 conv is grouped (`Conv2D(groups=...)`), its
width is `int(planes * width_per_group / 64) * groups`.

Details shared by every variant: `padding='same'` for every conv and the stem
max-pool (TF's asymmetric SAME padding at stride 2, no ZeroPadding2D), no conv
bias, BN epsilon 1e-5 / momentum 0.9, the last BN of each residual branch
starts with gamma 0 (Goyal et al. 2017, arXiv 1706.02677, Sec. 5.1), and a
1x1 conv + BN projection shortcut when the shape changes (He et al. 2016,
Sec. 3.3, option B). Trainable parameter counts with 1000 classes equal
torchvision's (e.g. 25,557,032 for resnet50, 60,192,808 for resnet152).

Layer names: "stem_conv", "stem_bn", "stem_relu", "stem_pool", then
"stage{2..5}_block{i}_{conv1,bn1,relu1,...,shortcut_conv,shortcut_bn,add,out}"
("stage2" is He et al.'s conv2_x), then "avg_pool" and "logits".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from models.defense_hooks import (
    check_denoise,
    check_sap,
    denoise_after,
    input_defense_layers,
    sap_after,
)
from models._common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Stats,
    batch_norm,
    check_positive_int,
    conv,
    logits_head,
    model_input,
    register_model,
    stage_blocks,
)

# name: (block kind, blocks per stage, groups, width_per_group).
RESNET_SPECS = {
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
    "resnext101_32x4d": ("bottleneck", (3, 4, 23, 3), 32, 4),
    "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
}
BOTTLENECK_EXPANSION = 4

Shortcut = Callable[..., keras.KerasTensor]


def projection_shortcut(x, filters: int, strides: int, name: str):
    """1x1 conv with stride `strides` + BN (He et al. 2016, Sec. 3.3, B)."""
    x = conv(x, filters, 1, strides, f"{name}_shortcut_conv")
    return batch_norm(x, f"{name}_shortcut_bn")


def _residual_out(x, branch, filters, strides, name, shortcut: Shortcut):
    """ReLU(branch + shortcut(x)); identity shortcut if the shape is kept."""
    if strides != 1 or x.shape[-1] != filters:
        x = shortcut(x, filters, strides, name)
    x = keras.layers.Add(name=f"{name}_add")([x, branch])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def basic_block(
    x,
    *,
    filters: int,
    strides: int,
    name: str,
    shortcut: Shortcut = projection_shortcut,
):
    """Two 3x3 convs (He et al. 2016, Fig. 5 left); output has `filters`.

    `shortcut(x, filters, strides, name)` is used only when the shape changes;
    the CIFAR ResNets pass their parameter-free option-A shortcut here.
    """
    y = conv(x, filters, 3, strides, f"{name}_conv1")
    y = batch_norm(y, f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = conv(y, filters, 3, 1, f"{name}_conv2")
    y = batch_norm(y, f"{name}_bn2", zero_gamma=True)
    return _residual_out(x, y, filters, strides, name, shortcut)


def bottleneck_block(
    x,
    *,
    filters: int,
    strides: int,
    name: str,
    groups: int = 1,
    width_per_group: int = 64,
):
    """1x1 -> 3x3 (stride, grouped) -> 1x1 to `4 * filters` channels.

    He et al. 2016, Fig. 5 right, with the v1.5 stride placement; with
    `groups > 1` this is ResNeXt's form (c) (Xie et al. 2017, Fig. 3).
    """
    inner = int(filters * width_per_group / 64) * groups
    y = conv(x, inner, 1, 1, f"{name}_conv1")
    y = batch_norm(y, f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = conv(y, inner, 3, strides, f"{name}_conv2", groups=groups)
    y = batch_norm(y, f"{name}_bn2")
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    out = filters * BOTTLENECK_EXPANSION
    y = conv(y, out, 1, 1, f"{name}_conv3")
    y = batch_norm(y, f"{name}_bn3", zero_gamma=True)
    return _residual_out(x, y, out, strides, name, projection_shortcut)


def resnet_stage(
    x,
    *,
    block_fn: Callable,
    num_blocks: int,
    strides: int,
    name: str,
    denoise: dict | None = None,
    **kw,
):
    """`num_blocks` blocks named `{name}_block1..N`; the first has the stride.

    `kw` (e.g. `filters`, `groups`) is passed to every `block_fn` call.
    `denoise` (see `models.defense_hooks`) adds a `NonLocalDenoise` after
    every block ("after_block") or after the stage ("after_stage").
    """
    for i in range(num_blocks):
        block = f"{name}_block{i + 1}"
        x = block_fn(x, strides=strides if i == 0 else 1, name=block, **kw)
        x = denoise_after(x, denoise, "after_block", block)
    return denoise_after(x, denoise, "after_stage", name)


def build_resnet(
    *,
    name: str,
    num_classes: int,
    input_shape: Sequence[int] | None = None,
    width: int = 64,
    blocks: Sequence[int] | None = None,
    groups: int | None = None,
    width_per_group: int | None = None,
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
    denoise: dict | None = None,
    input_defenses: Sequence | None = None,
    sap: dict | None = None,
) -> keras.Model:
    """Builds the registered ImageNet ResNet / ResNeXt `name`.

    Args:
        name: a key of `RESNET_SPECS`, e.g. "resnet50"; also the model name.
        num_classes: number of logits.
        input_shape: `(height, width, channels)`; default `(224, 224, 3)`.
            Any size works; the stem and stages 3-5 each halve it (`ceil`).
        width: channels of the stem and of stage 2's `planes`; stage k uses
            `width * 2 ** (k - 2)` planes (64 in He et al. 2016).
        blocks: blocks per stage (4 ints), overriding the spec, e.g.
            `(1, 1, 1, 1)` for smoke tests.
        groups: ResNeXt cardinality of the grouped 3x3 conv (bottleneck
            only); None takes the spec's value (1 for ResNet).
        width_per_group: ResNeXt bottleneck width per group for 64 planes;
            None takes the spec's value (64 for ResNet).
        mean: per-channel mean on the [0, 1] scale, or None for no
            normalization layer.
        std: per-channel standard deviation on the [0, 1] scale.
        denoise, input_defenses, sap: defense hook points, see
            `models.defense_hooks` (e.g. `denoise={"kind": "gaussian",
            "embed": True, "where": "after_stage"}` is Xie et al.'s
            R152-Denoise with 71,341,608 parameters for resnet152).

    Returns:
        A Functional `keras.Model` mapping float32 images in [0, 1] of shape
        `(batch, height, width, channels)` to float32 logits
        `(batch, num_classes)`.

    Raises:
        ValueError: for a non-positive `num_classes`, `width`, `groups` or
            `width_per_group`; a bad `blocks`; a bottleneck width below 1;
            basic blocks with `groups != 1` or `width_per_group != 64`; or
            mean/std that do not match the input channels.
    """
    kind, default_blocks, spec_groups, spec_wpg = RESNET_SPECS[name]
    blocks = stage_blocks(blocks, default_blocks)
    groups = spec_groups if groups is None else groups
    width_per_group = spec_wpg if width_per_group is None else width_per_group
    for value, what in ((num_classes, "num_classes"), (width, "width")):
        check_positive_int(value, what)
    block_kw = _block_kwargs(kind, width, groups, width_per_group)
    denoise = check_denoise(denoise)
    sap = check_sap(sap, range(2, 2 + len(blocks)))
    inputs, x = model_input(input_shape or (224, 224, 3), mean, std,
                            input_defense_layers(input_defenses))
    x = conv(x, width, 7, 2, "stem_conv")
    x = batch_norm(x, "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for i, num_blocks in enumerate(blocks):
        x = resnet_stage(
            x,
            num_blocks=num_blocks,
            strides=1 if i == 0 else 2,
            name=f"stage{i + 2}",
            filters=width * 2**i,
            denoise=denoise,
            **block_kw,
        )
        x = sap_after(x, sap, i + 2)
    return keras.Model(inputs, logits_head(x, num_classes), name=name)


def _block_kwargs(kind: str, width: int, groups: int, width_per_group: int):
    """Validates the block options; returns `block_fn` and its kwargs."""
    check_positive_int(groups, "groups")
    check_positive_int(width_per_group, "width_per_group")
    if kind == "basic":
        if groups != 1 or width_per_group != 64:
            raise ValueError(
                "basic-block ResNets need groups=1 and width_per_group=64; "
                f"got groups={groups}, width_per_group={width_per_group}"
            )
        return {"block_fn": basic_block}
    if int(width * width_per_group / 64) < 1:
        raise ValueError(
            f"bottleneck width int(width * width_per_group / 64) * groups is 0 "
            f"for width={width}, width_per_group={width_per_group}; raise "
            "width_per_group or width"
        )
    return {
        "block_fn": bottleneck_block,
        "groups": groups,
        "width_per_group": width_per_group,
    }


def _entry(name: str) -> Callable[..., keras.Model]:
    """Makes and registers the small entry function for `name`."""

    def entry(
        *,
        num_classes: int,
        input_shape: tuple[int, int, int] | None = None,
        width: int = 64,
        blocks: Sequence[int] | None = None,
        groups: int | None = None,
        width_per_group: int | None = None,
        mean: Stats = IMAGENET_MEAN,
        std: Stats = IMAGENET_STD,
        denoise: dict | None = None,
        input_defenses: Sequence | None = None,
        sap: dict | None = None,
    ) -> keras.Model:
        return build_resnet(
            name=name,
            num_classes=num_classes,
            input_shape=input_shape,
            width=width,
            blocks=blocks,
            groups=groups,
            width_per_group=width_per_group,
            mean=mean,
            std=std,
            denoise=denoise,
            input_defenses=input_defenses,
            sap=sap,
        )

    kind, blocks, groups, width_per_group = RESNET_SPECS[name]
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"{name}: {kind} blocks {blocks}, groups {groups}, width_per_group "
        f"{width_per_group}. Args, returns, errors as in `build_resnet`."
    )
    return register_model(name)(entry)


resnet18 = _entry("resnet18")
resnet34 = _entry("resnet34")
resnet50 = _entry("resnet50")
resnet101 = _entry("resnet101")
resnet152 = _entry("resnet152")
resnext50_32x4d = _entry("resnext50_32x4d")
resnext101_32x4d = _entry("resnext101_32x4d")
resnext101_32x8d = _entry("resnext101_32x8d")
