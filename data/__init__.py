"""Input pipelines: `get_dataset(name, split, batch_size=...)` -> `(x, y)`.

Every dataset yields x float32 `(batch, height, width, channels)` in
`[0, 1]` and y int32 `(batch,)`; models normalize inside themselves, so
attacks work on the `[0, 1]` scale (Madry et al. 2018, arXiv 1706.06083).

Fashion-MNIST is read offline from its IDX files (`data.fashion_mnist`);
MNIST, CIFAR-10/100 and ImageNet go through tensorflow-datasets
(`data.tfds_datasets`).

Example:
    >>> ds = data.get_dataset("fashion_mnist", "train", batch_size=128,
    ...                       shuffle=True, seed=0)
    >>> x, y = next(iter(ds))  # (128, 28, 28, 1) float32, (128,) int32
"""

import tensorflow as tf

from . import _pipeline
from . import fashion_mnist
from . import tfds_datasets
from .dataset_info import DatasetInfo
from .dataset_info import DatasetNotFoundError
from .dataset_info import canonical_split
from .dataset_info import get_info
from .dataset_info import list_datasets
from .fashion_mnist import load_fashion_mnist


def _check_channels(name: str, channels: int | None) -> None:
    raw = get_info(name).image_shape[-1]
    accepted = (None, raw, 3) if raw == 1 else (None, raw)
    if channels not in accepted:
        raise ValueError(
            f"channels must be one of {accepted} for {name!r} "
            f"({raw}-channel images); got {channels!r}"
        )


def _check_args(name, batch_size, seed, num_examples, image_size, channels):
    _pipeline.validate_positive_int("batch_size", batch_size, False)
    _pipeline.validate_positive_int("num_examples", num_examples, True)
    _pipeline.validate_positive_int("image_size", image_size, True)
    if seed is not None and not _pipeline.is_int(seed):
        raise ValueError(f"seed must be an int or None; got {seed!r}")
    _check_channels(name, channels)


def get_dataset(
    name: str,
    split: str,
    *,
    batch_size: int,
    shuffle: bool = False,
    augment: bool = False,
    seed: int | None = None,
    data_dir: str | None = None,
    num_examples: int | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    drop_remainder: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Builds a batched input pipeline of `[0, 1]` images and int labels.

    tf.data autotuning is disabled on the result (it made `fit()` hang
    41-48 s at exit on 2-core CPUs); a fixed 2 batches are prefetched.

    Args:
        name: one of `list_datasets()`: `"cifar10"`, `"cifar100"`,
            `"fashion_mnist"`, `"imagenet2012"`, `"mnist"`.
        split: `"train"` or `"test"`; ImageNet: `"train"` or
            `"validation"`, with `"test"` accepted as an alias of
            `"validation"` (ILSVRC2012 test labels are not public).
        batch_size: GLOBAL batch size; a tf.distribute strategy splits it.
        shuffle: shuffle with a buffer covering the whole split for in-memory
            data (10000 plus file shuffling for ImageNet), reshuffled every
            epoch.
        augment: training augmentation: CIFAR pad-4 crop + flip (He et al.
            2016, arXiv 1512.03385); ImageNet random-resized crop + flip
            (Szegedy et al. 2015, arXiv 1409.4842); none for (Fashion-)MNIST.
        seed: seeds shuffling and augmentation; `None` = nondeterministic.
        data_dir: Fashion-MNIST: directory with the IDX `.gz` files; others:
            tfds data root (and ImageNet manual-dir candidate).
        num_examples: keep the first N examples of the split (before
            shuffling); at most the split size.
        image_size: bilinear resize to `(image_size, image_size)`; ImageNet
            crops to it (default 224).
        channels: 3 tiles grayscale images to RGB; 1 or `None` keeps them.
        drop_remainder: drop the last incomplete batch.
        repeat: repeat forever (pass `steps_per_epoch` to `fit`).

    Returns:
        `tf.data.Dataset` of `(x, y)`: x float32
        `(batch, height, width, channels)` in `[0, 1]`, y int32 `(batch,)`.

    Raises:
        ValueError: unknown `name` or `split`, non-positive sizes, or a
            `channels` the images cannot be converted to (1 for RGB).
        DatasetNotFoundError: the data is not on disk and cannot be fetched
            now; the message says how to get it.
    """
    split = canonical_split(name, split)
    _check_args(name, batch_size, seed, num_examples, image_size, channels)
    options = _pipeline.PipelineOptions(
        batch_size=int(batch_size),
        shuffle=bool(shuffle),
        seed=None if seed is None else int(seed),
        repeat=repeat,
        drop_remainder=drop_remainder,
    )
    sizes = dict(
        data_dir=data_dir,
        num_examples=num_examples,
        image_size=image_size,
        channels=channels,
    )
    if name == "fashion_mnist":
        return fashion_mnist.build_dataset(split, options, **sizes)
    return tfds_datasets.build_dataset(
        name, split, options, augment=augment, **sizes
    )


__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "get_dataset",
    "get_info",
    "list_datasets",
    "load_fashion_mnist",
]
