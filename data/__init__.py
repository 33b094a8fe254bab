"""Input pipelines: `get_dataset(name, split, batch_size=...)` -> `(x, y)`.

Every dataset yields x float32 `(batch, height, width, channels)` in
`[0, 1]` and y int32 `(batch,)`; models normalize inside themselves, so
attacks work on the `[0, 1]` scale (Madry et al. 2018, arXiv 1706.06083).

Fashion-MNIST is read offline from its IDX files (`data.fashion_mnist`);
MNIST, CIFAR-10/100 and ImageNet go through tensorflow-datasets
(`data.tfds_datasets`).

Two input paths: `get_dataset` always builds a `tf.data.Dataset`
(TensorFlow); `get_backend_dataset` takes the same arguments and builds the
one for the current Keras backend: tf.data under TensorFlow, and under
other backends (JAX) a `keras.utils.PyDataset` of numpy batches for
Fashion-MNIST (`data.numpy_pipeline`). Importing this package, its
registry and `load_fashion_mnist` never import TensorFlow; the tf.data
modules (`_pipeline`, `augment`, `tfds_datasets`) are imported when used.

Example:
    >>> ds = data.get_dataset("fashion_mnist", "train", batch_size=128,
    ...                       shuffle=True, seed=0)
    >>> x, y = next(iter(ds))  # (128, 28, 28, 1) float32, (128,) int32
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import fashion_mnist
from . import options as _options
from .dataset_info import DatasetInfo
from .dataset_info import DatasetNotFoundError
from .dataset_info import canonical_split
from .dataset_info import get_info
from .dataset_info import list_datasets
from .fashion_mnist import load_fashion_mnist

if TYPE_CHECKING:
    import tensorflow as tf

# Submodules that import TensorFlow: loaded on first use (`data.augment`).
_TF_MODULES = ("_pipeline", "augment", "tfds_datasets")


def __getattr__(name: str) -> Any:
    if name in _TF_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_channels(name: str, channels: int | None) -> None:
    raw = get_info(name).image_shape[-1]
    accepted = (None, raw, 3) if raw == 1 else (None, raw)
    if channels not in accepted:
        raise ValueError(
            f"channels must be one of {accepted} for {name!r} "
            f"({raw}-channel images); got {channels!r}"
        )


def _check_args(name, batch_size, seed, num_examples, image_size, channels):
    _options.validate_positive_int("batch_size", batch_size, False)
    _options.validate_positive_int("num_examples", num_examples, True)
    _options.validate_positive_int("image_size", image_size, True)
    if seed is not None and not _options.is_int(seed):
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
    split, options, sizes = _prepare(
        name, split, batch_size, shuffle, seed, data_dir, num_examples,
        image_size, channels, drop_remainder, repeat)
    if name == "fashion_mnist":
        return fashion_mnist.build_dataset(split, options, **sizes)
    from . import tfds_datasets

    return tfds_datasets.build_dataset(
        name, split, options, augment=augment, **sizes
    )


def _prepare(name, split, batch_size, shuffle, seed, data_dir, num_examples,
             image_size, channels, drop_remainder, repeat):
    """The canonical split, the `PipelineOptions` and the size arguments of
    a pipeline, after checking every argument."""
    split = canonical_split(name, split)
    _check_args(name, batch_size, seed, num_examples, image_size, channels)
    options = _options.PipelineOptions(
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
    return split, options, sizes


def get_backend_dataset(
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
) -> Any:
    """`get_dataset`'s pipeline for the current Keras backend: the same
    arguments, checks and errors.

    Under TensorFlow: `get_dataset(...)`, a `tf.data.Dataset`. Under other
    backends (JAX), Fashion-MNIST comes as a
    `data.numpy_pipeline.ArrayDataset` (a `keras.utils.PyDataset`, without
    TensorFlow) of the same batches: x float32 `(batch, height, width,
    channels)` in `[0, 1]`, y int32 `(batch,)`; shuffled in numpy's orders
    (new every epoch, set by `(seed, epoch)`); infinite with `repeat=True`
    (give `fit` its `steps_per_epoch`, and `shuffle=False` as train.py
    does). It has `element_spec` and `as_numpy_iterator()` as a tf.data
    dataset does; its batches are numpy arrays (no `.numpy()`). The tfds
    datasets (MNIST, CIFAR, ImageNet) have no numpy path: they stay
    tf.data, which Keras's JAX trainer also reads, and need TensorFlow.

    Example:
        >>> ds = data.get_backend_dataset("fashion_mnist", "train",
        ...                               batch_size=128, shuffle=True,
        ...                               seed=0, repeat=True)
    """
    import keras

    args = dict(batch_size=batch_size, shuffle=shuffle, seed=seed,
                data_dir=data_dir, num_examples=num_examples,
                image_size=image_size, channels=channels,
                drop_remainder=drop_remainder, repeat=repeat)
    if keras.backend.backend() == "tensorflow" or name != "fashion_mnist":
        return get_dataset(name, split, augment=augment, **args)
    # no augmentation for Fashion-MNIST, as in get_dataset
    split, options, sizes = _prepare(name, split, **args)
    return fashion_mnist.build_array_dataset(split, options, **sizes)


__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "get_backend_dataset",
    "get_dataset",
    "get_info",
    "list_datasets",
    "load_fashion_mnist",
]
