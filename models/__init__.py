"""Model registry: `create_model(name, ...)` and `list_models(pattern)`.

The timm-style entry points (`timm.create_model`, `timm.list_models`) over
the registered builders of `models.resnet` (ImageNet ResNet v1.5 / ResNeXt),
`models.cifar_resnet` (resnet20, resnet56), `models.wide_resnet` (wrn28_10,
wrn34_10) and `models.madry_cnn`. Importing this package registers them all.

Every model maps float32 images in [0, 1], `(batch, height, width,
channels)`, to float32 logits `(batch, num_classes)`; mean/std normalization
is the model's first layer ("normalize"), so attacks work in pixel space.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras

# Importing the model modules registers their entry functions.
from models import cifar_resnet, madry_cnn, resnet, wide_resnet  # noqa: F401
# Registers the Keras layers of the generative models (MaskedConv2D), which
# the purifier layers' saved models need.
from models import dcgan, pixelcnn  # noqa: F401
from models._common import MODELS

__all__ = ["create_model", "list_models"]


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching fnmatch `pattern`.

    Example:
        `list_models("resnext*")` ->
        `["resnext101_32x4d", "resnext101_32x8d", "resnext50_32x4d"]`.
    """
    return MODELS.names(pattern)


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int] | None = None,
    **kwargs: Any,
) -> keras.Model:
    """Builds the registered model `name`.

    Args:
        name: a name from `list_models()`, e.g. "resnet50", "wrn34_10".
        num_classes: number of logits.
        input_shape: `(height, width, channels)`; None uses the model's
            default ((224, 224, 3) for ImageNet ResNets, (32, 32, 3) for the
            CIFAR ones, (28, 28, 1) for `madry_cnn`).
        **kwargs: model options such as `width`, `blocks`, `groups`,
            `width_per_group`, `widen_factor`, `mean`, `std` (see each
            builder). Options whose value is None are dropped so that unset
            command-line overrides keep the defaults; hence `mean=None` here
            keeps the default mean. To build without a normalization layer,
            call the entry function (e.g. `models.resnet.resnet50`) with
            `mean=None, std=None`.

    Returns:
        A Functional `keras.Model` mapping float32 images in [0, 1] of shape
        `(batch, height, width, channels)` to float32 logits
        `(batch, num_classes)` (no softmax).

    Raises:
        KeyError: if `name` is unknown; the message lists `list_models()`.
        TypeError: if an option is not accepted by the model; the message
            names it and the accepted ones.
        ValueError: for invalid option values (from the builder).

    Example:
        `create_model("resnet50", num_classes=10, input_shape=(32, 32, 3),
        width=8, blocks=(1, 1, 1, 1))`
    """
    builder = MODELS.get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    accepted = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {name!r} does not accept option(s) {unknown}; accepted: "
            f"{accepted}"
        )
    return builder(num_classes=num_classes, **kwargs)
