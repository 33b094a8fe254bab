"""Fashion-MNIST from its IDX `.gz` files, offline first.

Files are looked up, in order, in: the `data_dir` argument,
`$FASHION_MNIST_DIR`, and `/usr/share/datasets/fashion-mnist/`
(Debian/Ubuntu package `dataset-fashion-mnist`). The first directory
holding both files of the split wins. If none has them, tfds's
`fashion_mnist` is tried, which needs network the first time. tfds cannot
read the Debian files itself: they were re-gzipped, so its checksums do not
match.

References:
    Xiao et al. 2017, "Fashion-MNIST: a Novel Image Dataset for
        Benchmarking Machine Learning Algorithms", arXiv 1708.07747.
    LeCun et al., the IDX file format (http://yann.lecun.com/exdb/mnist/).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import zlib
from typing import TYPE_CHECKING

import numpy as np

from core.errors import UserError

from . import dataset_info
from .options import PipelineOptions

if TYPE_CHECKING:  # TensorFlow is imported only by the tf.data path
    import tensorflow as tf

    from .numpy_pipeline import ArrayDataset

ENV_VAR = "FASHION_MNIST_DIR"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_UINT8_CODE = 0x08
_NUM_CLASSES = 10


def read_idx(path: str, ndim: int) -> np.ndarray:
    """Reads a gzipped IDX file of unsigned bytes.

    The IDX header is two zero bytes, a type code (0x08 = uint8), the number
    of dimensions, then each dimension as a big-endian uint32.

    Args:
        path: a `.gz` IDX file.
        ndim: expected number of dimensions (3 for images, 1 for labels).

    Returns:
        uint8 array with the dimensions stored in the header, e.g.
        `(num_examples, 28, 28)` for images or `(num_examples,)` for labels.

    Raises:
        ValueError: if the file is not valid gzip, is truncated, or its
            header (magic, type, ndim) or size is wrong; the message names
            the file.
        FileNotFoundError: if `path` does not exist.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(
            f"corrupt or truncated gzip file {path!r}: {err}"
        ) from err
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"IDX file {path!r} is too short for its header")
    zeros, code, file_ndim = raw[:2], raw[2], raw[3]
    if zeros != b"\x00\x00" or code != _UINT8_CODE or file_ndim != ndim:
        raise ValueError(
            f"bad IDX magic in {path!r}: expected 00 00 08 {ndim:02x}, got "
            f"{raw[:4].hex(' ')}"
        )
    shape = tuple(
        int(d) for d in np.frombuffer(raw[4:header_size], dtype=">u4")
    )
    expected = int(np.prod(shape))
    if len(raw) - header_size != expected:
        raise ValueError(
            f"IDX file {path!r} has {len(raw) - header_size} data bytes; its "
            f"header shape {shape} needs {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


@functools.lru_cache(maxsize=4)
def _read_split(images_path: str, labels_path: str):
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path!r} holds images {images.shape} but "
            f"{labels_path!r} holds {labels.shape[0]} labels; expected "
            "(N, 28, 28) images and N labels"
        )
    if labels.size and labels.max() >= _NUM_CLASSES:
        raise ValueError(f"labels in {labels_path!r} exceed 9")
    return images, labels  # frombuffer on bytes: already read-only


def _search_dirs(data_dir: str | None) -> list[str]:
    """`data_dir`, `$FASHION_MNIST_DIR` (when set) and the Debian dir.

    Raises:
        UserError: `data_dir` or `$FASHION_MNIST_DIR` is set but is not a
            directory (a typo would otherwise fall back to another copy
            without a word).
    """
    env = os.environ.get(ENV_VAR)
    for name, value in (("data_dir", data_dir), (f"${ENV_VAR}", env)):
        if value and not os.path.isdir(value):
            raise UserError(f"{name}={value!r} is not a directory; point it "
                            "at the folder of the four Fashion-MNIST IDX "
                            f".gz files, or unset it to use {DEBIAN_DIR}")
    return [d for d in (data_dir, env, DEBIAN_DIR) if d]


def find_idx_dir(split: str, data_dir: str | None = None) -> str | None:
    """Returns the first search directory holding both files of `split`.

    Args:
        split: `"train"` or `"test"`.
        data_dir: optional directory searched first.

    Returns:
        The directory, or `None` if none of `data_dir`, `$FASHION_MNIST_DIR`
        and `/usr/share/datasets/fashion-mnist` holds the files.
    """
    for directory in _search_dirs(data_dir):
        paths = [os.path.join(directory, f) for f in FILES[split]]
        if all(os.path.isfile(p) for p in paths):
            return directory
    return None


@functools.lru_cache(maxsize=4)
def _load_with_tfds(split: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    from . import tfds_datasets

    builder = tfds_datasets.prepared_builder("fashion_mnist", data_dir)
    images, labels = tfds.as_numpy(
        builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
    )
    images = images[..., 0].astype(np.uint8)
    labels = labels.astype(np.uint8)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_fashion_mnist(
    split: str, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of Fashion-MNIST (Xiao et al. 2017, arXiv 1708.07747).

    Decoded arrays are cached in-process and returned read-only; copy them
    before modifying.

    Args:
        split: `"train"` (60000 images) or `"test"` (10000 images).
        data_dir: directory with the four IDX `.gz` files, searched before
            `$FASHION_MNIST_DIR` and `/usr/share/datasets/fashion-mnist`;
            also passed to tfds as its `data_dir` in the fallback.

    Returns:
        `(images, labels)`: uint8 images `(num_examples, 28, 28)` in
        `[0, 255]` and uint8 labels `(num_examples,)` in `[0, 9]`.

    Raises:
        ValueError: if `split` is unknown or a file is corrupt.
        DatasetNotFoundError: if no directory has the files and tfds cannot
            provide them; the message says how to get the data.
    """
    split = dataset_info.canonical_split("fashion_mnist", split)
    directory = find_idx_dir(split, data_dir)
    if directory is not None:
        paths = [os.path.join(directory, f) for f in FILES[split]]
        return _read_split(*map(os.path.abspath, paths))
    try:
        return _load_with_tfds(split, data_dir)
    except (dataset_info.DatasetNotFoundError, ImportError) as err:
        raise dataset_info.DatasetNotFoundError(
            f"Fashion-MNIST {split!r} files {list(FILES[split])} not found in "
            f"{_search_dirs(data_dir)} and tfds could not provide them "
            f"({err}). Get them with `apt-get install dataset-fashion-mnist` "
            f"(installs to {DEBIAN_DIR}), or download the four .gz files "
            "from https://github.com/zalandoresearch/fashion-mnist and set "
            f"${ENV_VAR} (or pass data_dir), or run once with network "
            "access so tensorflow-datasets can download fashion_mnist."
        ) from err


def _examples(split, data_dir, num_examples):
    images, labels = load_fashion_mnist(split, data_dir)
    if num_examples is not None:
        images, labels = images[:num_examples], labels[:num_examples]
    return images, labels


def build_dataset(
    split: str,
    options: PipelineOptions,
    *,
    data_dir: str | None = None,
    num_examples: int | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> tf.data.Dataset:
    """The in-memory Fashion-MNIST pipeline behind `data.get_dataset`.

    No augmentation: Fashion-MNIST recipes train on the raw images.

    Args:
        split: `"train"` or `"test"`.
        options: batching, shuffling and repeat settings.
        data_dir: see `load_fashion_mnist`.
        num_examples: keep the first N examples (before shuffling).
        image_size: optional square output size (bilinear).
        channels: 1 (default) or 3 (grayscale tiled).

    Returns:
        Dataset of `(x, y)`: x float32 `(batch, height, width, channels)` in
        `[0, 1]`, y int32 `(batch,)`.
    """
    import tensorflow as tf

    from . import _pipeline

    images, labels = _examples(split, data_dir, num_examples)
    ds = tf.data.Dataset.from_tensor_slices((images[..., None], labels))
    options = dataclasses.replace(
        options, shuffle_buffer=len(labels), shard_by_data=True
    )
    fn = _pipeline.simple_preprocess(image_size, channels)
    return _pipeline.finish(ds, fn, options)


def build_array_dataset(
    split: str,
    options: PipelineOptions,
    *,
    data_dir: str | None = None,
    num_examples: int | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> ArrayDataset:
    """The numpy (`keras.utils.PyDataset`) Fashion-MNIST pipeline behind
    `data.get_backend_dataset` on backends other than TensorFlow; the
    arguments and the batches as `build_dataset` (no augmentation), the
    shuffled orders numpy's (`data.numpy_pipeline`). No TensorFlow.

    Returns:
        `data.numpy_pipeline.ArrayDataset` of `(x, y)`: x float32
        `(batch, height, width, channels)` in `[0, 1]`, y int32 `(batch,)`.
    """
    from .numpy_pipeline import ArrayDataset

    images, labels = _examples(split, data_dir, num_examples)
    return ArrayDataset(images, labels, options, image_size=image_size,
                        channels=channels)
