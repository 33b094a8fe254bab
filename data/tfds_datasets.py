"""MNIST, CIFAR-10, CIFAR-100 and ImageNet-1k through tensorflow-datasets.

Before reading, the tfds builder is checked with `is_prepared()`. An
unprepared dataset is downloaded only when its download host answers;
otherwise a `DatasetNotFoundError` says how to prepare it, instead of tfds
retrying DNS for minutes. ImageNet cannot be downloaded by tfds: put
`ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` (from
https://image-net.org/download-images, registration needed) into a manual
dir: `$IMAGENET_MANUAL_DIR`, the `data_dir` argument itself, or
`<data_dir>/downloads/manual` (tfds's default; `data_dir` defaults to
`$TFDS_DATA_DIR` or `~/tensorflow_datasets`). The first call then prepares
the TFRecords (hours, ~150 GB).

Augmentation (`augment=True`):
    CIFAR: 4-px zero pad, random 32x32 crop, random horizontal flip
        (He et al. 2016, arXiv 1512.03385, Sec. 4.2).
    MNIST: none.
    ImageNet: random-resized crop (area 8%-100%, aspect 3/4-4/3) to
        `image_size` plus flip (Szegedy et al. 2015, arXiv 1409.4842,
        Sec. 6). Without augmentation: shorter side to 256 * image_size /
        224, center crop `image_size`.
"""

import dataclasses
import os
import socket
import urllib.parse

import tensorflow as tf

from . import _pipeline
from . import augment as augment_lib
from . import dataset_info

IMAGENET_ENV = "IMAGENET_MANUAL_DIR"
IMAGENET_TARS = {
    "train": "ILSVRC2012_img_train.tar",
    "validation": "ILSVRC2012_img_val.tar",
}
IMAGENET_SHUFFLE_BUFFER = 10_000
IMAGENET_DEFAULT_SIZE = 224
# Where tfds 4.9 downloads each dataset from; probed before downloading.
_DOWNLOAD_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    ),
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
}
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def _network_available(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to `url`'s host opens (assumed with a
    proxy)."""
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout):
            return True
    except OSError:
        return False


def imagenet_manual_dirs(data_dir: str | None, root: str) -> list[str]:
    """Directories searched for the ILSVRC2012 tars, in order.

    Args:
        data_dir: the `data_dir` given to `get_dataset`, or `None`.
        root: the tfds data root actually used (`builder.data_dir_root`).

    Returns:
        `[$IMAGENET_MANUAL_DIR, data_dir, root/downloads/manual]`, without
        unset entries.
    """
    candidates = [
        os.environ.get(IMAGENET_ENV),
        data_dir,
        os.path.join(root, "downloads", "manual"),
    ]
    return [d for d in candidates if d]


def _prepare_imagenet(builder, split: str, data_dir: str | None) -> None:
    import tensorflow_datasets as tfds

    tar = IMAGENET_TARS[split]
    dirs = imagenet_manual_dirs(data_dir, os.fspath(builder.data_dir_root))
    for directory in dirs:
        if os.path.isfile(os.path.join(directory, tar)):
            config = tfds.download.DownloadConfig(manual_dir=directory)
            builder.download_and_prepare(download_config=config)
            return
    raise dataset_info.DatasetNotFoundError(
        f"imagenet2012 is not prepared in {os.fspath(builder.data_dir)} and "
        f"{tar} was not found in any manual dir {dirs}. Download "
        f"{' and '.join(IMAGENET_TARS.values())} from "
        "https://image-net.org/download-images (registration needed) into "
        f"one of them (or set ${IMAGENET_ENV}); the next call prepares the "
        "tfds TFRecords."
    )


def _download(builder, name: str) -> None:
    url = _DOWNLOAD_URLS[name]
    where = os.fspath(builder.data_dir)
    if not _network_available(url):
        raise dataset_info.DatasetNotFoundError(
            f"tfds dataset {name!r} is not prepared in {where} and {url} "
            "cannot be reached (no network?). Run once with network access "
            f"(it downloads into data_dir), or copy a prepared {where} from "
            "another machine and pass its root as data_dir."
        )
    try:
        builder.download_and_prepare()
    except Exception as err:  # translate any tfds download failure
        raise dataset_info.DatasetNotFoundError(
            f"downloading tfds dataset {name!r} into {where} failed: {err}"
        ) from err


def prepared_builder(name: str, data_dir: str | None = None, split=None):
    """Returns a tfds builder for `name` whose data is on disk.

    Prepares the dataset first if needed (download, or ImageNet from the
    manual dir), but never starts a download that cannot succeed.

    Args:
        name: a tfds name: `"mnist"`, `"fashion_mnist"`, `"cifar10"`,
            `"cifar100"` or `"imagenet2012"`.
        data_dir: tfds data root; `None` uses tfds's default.
        split: optional split that must be present after preparation.

    Returns:
        A prepared `tfds.core.DatasetBuilder`.

    Raises:
        DatasetNotFoundError: if the data is absent and cannot be
            downloaded or prepared now; the message says how to get it.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if name == "imagenet2012":
            _prepare_imagenet(builder, split or "validation", data_dir)
        else:
            _download(builder, name)
    if split is not None and split not in builder.info.splits:
        raise dataset_info.DatasetNotFoundError(
            f"{name!r} in {os.fspath(builder.data_dir)} was prepared without "
            f"split {split!r} (has {list(builder.info.splits)}); add its "
            "source files and prepare it again."
        )
    return builder


def _imagenet_preprocess(train_augment: bool, image_size: int):
    if train_augment:

        def fn(jpeg, y, seed):
            x = augment_lib.random_resized_crop_jpeg(jpeg, seed, image_size)
            return x, tf.cast(y, tf.int32)

    else:

        def fn(jpeg, y):
            image = tf.io.decode_jpeg(jpeg, channels=3)
            x = augment_lib.center_crop(image, image_size)
            return x, tf.cast(y, tf.int32)

    return fn


def _imagenet_dataset(builder, split, options, augment, image_size):
    """ImageNet: encoded JPEGs, decoded (and cropped) in the map."""
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=options.shuffle,
        read_config=tfds.ReadConfig(
            shuffle_seed=options.seed, try_autocache=False
        ),
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    fn = _imagenet_preprocess(augment, image_size)
    return _pipeline.finish(ds, fn, options, needs_seed=augment)


def build_dataset(
    name: str,
    split: str,
    options: _pipeline.PipelineOptions,
    *,
    augment: bool = False,
    data_dir: str | None = None,
    num_examples: int | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> tf.data.Dataset:
    """The tfds-backed pipeline behind `data.get_dataset`.

    Args:
        name: `"mnist"`, `"cifar10"`, `"cifar100"` or `"imagenet2012"`.
        split: canonical split (`"train"`, `"test"` or `"validation"`).
        options: batching, shuffling and repeat settings.
        augment: apply the dataset's training augmentation (module doc).
        data_dir: tfds data root (and an ImageNet manual dir candidate).
        num_examples: keep the first N examples of the split.
        image_size: square output size; ImageNet defaults to 224.
        channels: output channels; 3 tiles MNIST's grayscale.

    Returns:
        Dataset of `(x, y)`: x float32 `(batch, height, width, channels)` in
        `[0, 1]`, y int32 `(batch,)`.

    Raises:
        DatasetNotFoundError: see `prepared_builder`.
    """
    import tensorflow_datasets as tfds

    builder = prepared_builder(name, data_dir, split)
    num_elements = builder.info.splits[split].num_examples
    if num_examples is not None:
        # tfds rejects slices past the end; "at most the split size".
        num_elements = min(num_examples, num_elements)
        split = f"{split}[:{num_elements}]"
    if name == "imagenet2012":
        options = dataclasses.replace(
            options, shuffle_buffer=min(num_elements, IMAGENET_SHUFFLE_BUFFER)
        )
        size = image_size or IMAGENET_DEFAULT_SIZE
        return _imagenet_dataset(builder, split, options, augment, size)
    read_config = tfds.ReadConfig(try_autocache=False)
    ds = builder.as_dataset(
        split=split, as_supervised=True, read_config=read_config
    )
    options = dataclasses.replace(
        options, shuffle_buffer=num_elements, cache=True
    )
    augment_fn = None
    if augment and name.startswith("cifar"):
        augment_fn = augment_lib.cifar_crop_flip
    fn = _pipeline.simple_preprocess(image_size, channels, augment_fn)
    return _pipeline.finish(ds, fn, options, needs_seed=augment_fn is not None)
