"""Tests for data/: real Fashion-MNIST, IDX reader, preprocessing, errors.

Nothing here downloads: tfds-backed paths run on a fake builder, and the
not-prepared paths run with the network probe patched to "unreachable".
The registry, the IDX reader and the argument checks need no TensorFlow
and run under every backend; the tf.data pipelines and the tf.image
preprocessing are `tensorflow_only` (the numpy input path is tested in
test_numpy_pipeline.py).
"""

import gzip
import re
import types

import numpy as np
import pytest

import data
from data import fashion_mnist

tensorflow_only = pytest.mark.tensorflow_only

needs_fmnist = pytest.mark.skipif(
    fashion_mnist.find_idx_dir("test") is None,
    reason="Fashion-MNIST IDX files absent (apt-get install "
    "dataset-fashion-mnist or set FASHION_MNIST_DIR)",
)


def _no_network(monkeypatch):
    try:
        from data import tfds_datasets
    except ImportError:  # no TensorFlow: tfds cannot download anyway
        return
    monkeypatch.setattr(
        tfds_datasets, "_network_available", lambda url, timeout=5.0: False
    )


def _write_idx(path, array, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    header = magic or bytes([0, 0, 8, array.ndim])
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + dims + array.tobytes())


def _write_tiny_split(directory, split, n=6):
    images = np.arange(n * 28 * 28, dtype=np.int64).reshape(n, 28, 28) % 256
    labels = np.arange(n) % 10
    image_file, label_file = fashion_mnist.FILES[split]
    _write_idx(directory / image_file, images)
    _write_idx(directory / label_file, labels)
    return images.astype(np.uint8), labels.astype(np.uint8)


# --- registry and errors ----------------------------------------------------


def test_list_and_info():
    assert data.list_datasets() == [
        "cifar10",
        "cifar100",
        "fashion_mnist",
        "imagenet2012",
        "mnist",
    ]
    info = data.get_info("fashion_mnist")
    assert (info.num_classes, info.image_shape) == (10, (28, 28, 1))
    assert (info.mean, info.std) == ((0.2860,), (0.3530,))
    assert (info.num_train, info.num_test) == (60000, 10000)
    assert data.get_info("cifar100").num_classes == 100
    assert data.get_info("imagenet2012").splits == ("train", "validation")
    with pytest.raises(AttributeError):
        info.num_classes = 3  # frozen


def test_unknown_name_and_split_raise():
    with pytest.raises(ValueError, match=r"'svhn'.*fashion_mnist"):
        data.get_dataset("svhn", "train", batch_size=2)
    with pytest.raises(ValueError, match=r"'val'.*'train', 'test'"):
        data.get_dataset("fashion_mnist", "val", batch_size=2)
    with pytest.raises(ValueError, match="'validation', 'test'.*alias"):
        data.canonical_split("imagenet2012", "val")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.get_info("imagenet")
    assert data.canonical_split("imagenet2012", "test") == "validation"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2, num_examples=-1), "num_examples"),
        (dict(batch_size=2, channels=1), "channels"),
        (dict(batch_size=2, image_size=1.5), "image_size"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.get_dataset("cifar10", "train", **kwargs)


# --- real Fashion-MNIST -----------------------------------------------------


@needs_fmnist
@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_load_fashion_mnist_real(split, n):
    images, labels = data.load_fashion_mnist(split)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), [n // 10] * 10)
    assert images.max() == 255 and not images.flags.writeable
    assert data.load_fashion_mnist(split)[0] is images  # cached


@tensorflow_only
@needs_fmnist
def test_get_dataset_fashion_mnist_batches():
    import tensorflow as tf

    ds = data.get_dataset(
        "fashion_mnist", "test", batch_size=64, num_examples=100
    )
    batches = list(ds)
    assert [int(x.shape[0]) for x, _ in batches] == [64, 36]
    x, y = batches[0]
    assert x.shape == (64, 28, 28, 1) and x.dtype == tf.float32
    assert y.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    images, labels = data.load_fashion_mnist("test")
    np.testing.assert_array_equal(y.numpy(), labels[:64])
    np.testing.assert_allclose(
        x.numpy()[..., 0], images[:64] / 255.0, atol=1e-6
    )
    assert ds.options().autotune.enabled is False


@tensorflow_only
@needs_fmnist
def test_get_dataset_resize_tile_and_drop_remainder():
    ds = data.get_dataset(
        "fashion_mnist",
        "train",
        batch_size=32,
        num_examples=70,
        image_size=32,
        channels=3,
        drop_remainder=True,
    )
    shapes = [tuple(x.shape) for x, _ in ds]
    assert shapes == [(32, 32, 32, 3)] * 2
    x = next(iter(ds))[0].numpy()
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert x.min() >= 0.0 and x.max() <= 1.0


@tensorflow_only
@needs_fmnist
def test_shuffle_is_seeded_and_reshuffles_each_epoch():
    def labels(seed):
        ds = data.get_dataset(
            "fashion_mnist",
            "train",
            batch_size=256,
            num_examples=256,
            shuffle=True,
            seed=seed,
            repeat=True,
        )
        it = iter(ds)
        return next(it)[1].numpy(), next(it)[1].numpy()

    first, second = labels(0)
    again, _ = labels(0)
    other, _ = labels(1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, second)  # new order in epoch 2
    expected = np.sort(data.load_fashion_mnist("train")[1][:256])
    np.testing.assert_array_equal(np.sort(first), expected)


# --- IDX reader and lookup ---------------------------------------------------


def test_read_idx_roundtrip_and_lookup(tmp_path, monkeypatch):
    images, labels = _write_tiny_split(tmp_path, "test")
    out_images, out_labels = data.load_fashion_mnist("test", str(tmp_path))
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_labels, labels)
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path))
    assert fashion_mnist.find_idx_dir("test") == str(tmp_path)
    assert fashion_mnist.find_idx_dir("train") != str(tmp_path)


def test_read_idx_rejects_corrupt_files(tmp_path):
    bad_magic = tmp_path / "bad_magic.gz"
    _write_idx(bad_magic, np.zeros((2, 28, 28)), magic=b"\x00\x00\x0d\x03")
    with pytest.raises(ValueError, match="bad IDX magic.*bad_magic.gz"):
        fashion_mnist.read_idx(str(bad_magic), ndim=3)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + np.array([10], ">u4").tobytes())
        f.write(b"\x01\x02")
    with pytest.raises(ValueError, match="short.gz.*needs 10"):
        fashion_mnist.read_idx(str(short), ndim=1)
    truncated = tmp_path / "truncated.gz"
    _write_idx(truncated, np.ones((50, 28, 28)))
    truncated.write_bytes(truncated.read_bytes()[:-20])
    with pytest.raises(ValueError, match="truncated.gz"):
        fashion_mnist.read_idx(str(truncated), ndim=3)


def test_missing_fashion_mnist_gives_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "no"))
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    _no_network(monkeypatch)
    with pytest.raises(
        data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"
    ):
        data.load_fashion_mnist("train", data_dir=str(tmp_path))
    assert issubclass(data.DatasetNotFoundError, FileNotFoundError)


# --- tfds-backed datasets: error paths and fake builders ---------------------


@tensorflow_only
def test_unprepared_tfds_dataset_raises_without_download(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    with pytest.raises(data.DatasetNotFoundError, match="not prepared"):
        data.get_dataset("mnist", "test", batch_size=2, data_dir=str(tmp_path))


@tensorflow_only
def test_imagenet_without_tars_explains_manual_dir(tmp_path, monkeypatch):
    from data import tfds_datasets

    def fail(url, timeout=5.0):
        raise AssertionError("ImageNet must never probe the network")

    monkeypatch.setattr(tfds_datasets, "_network_available", fail)
    monkeypatch.delenv(tfds_datasets.IMAGENET_ENV, raising=False)
    with pytest.raises(
        data.DatasetNotFoundError, match="ILSVRC2012_img_val.tar.*image-net.org"
    ):
        data.get_dataset(
            "imagenet2012", "test", batch_size=2, data_dir=str(tmp_path)
        )


class _FakeBuilder:
    """Stands in for a prepared tfds builder; records requested splits."""

    def __init__(self, x, y):
        self._x, self._y = x, y
        split = types.SimpleNamespace(num_examples=len(y))
        self.info = types.SimpleNamespace(
            splits={"train": split, "test": split, "validation": split}
        )
        self.requested = []

    def as_dataset(self, split, as_supervised, **kwargs):
        import tensorflow as tf

        assert as_supervised
        self.requested.append(split)
        end = re.fullmatch(r"\w+(?:\[:(\d+)\])?", split).group(1)
        n = int(end) if end else len(self._y)
        return tf.data.Dataset.from_tensor_slices((self._x[:n], self._y[:n]))


def _use_fake(monkeypatch, x, y):
    from data import tfds_datasets

    fake = _FakeBuilder(x, y)
    monkeypatch.setattr(
        tfds_datasets,
        "prepared_builder",
        lambda name, data_dir=None, split=None: fake,
    )
    return fake


@tensorflow_only
def test_cifar_pipeline_with_augmentation(monkeypatch):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    fake = _use_fake(monkeypatch, x, np.arange(20, dtype=np.int64))

    def first_batch(seed):
        ds = data.get_dataset(
            "cifar10",
            "train",
            batch_size=8,
            augment=True,
            seed=seed,
            num_examples=12,
        )
        return next(iter(ds))

    xb, yb = first_batch(3)
    assert xb.shape == (8, 32, 32, 3) and yb.dtype == tf.int32
    assert fake.requested[-1] == "train[:12]"
    spec = data.get_dataset("cifar10", "train", batch_size=8, augment=True)
    assert spec.element_spec[0].shape.as_list() == [None, 32, 32, 3]
    np.testing.assert_array_equal(xb.numpy(), first_batch(3)[0].numpy())
    assert not np.array_equal(xb.numpy(), first_batch(4)[0].numpy())
    np.testing.assert_array_equal(yb.numpy(), np.arange(8))


@tensorflow_only
def test_mnist_pipeline_tiles_channels(monkeypatch):
    x = np.full((5, 28, 28, 1), 255, dtype=np.uint8)
    _use_fake(monkeypatch, x, np.zeros(5, dtype=np.int64))
    ds = data.get_dataset(
        "mnist", "test", batch_size=5, channels=3, image_size=16
    )
    xb, _ = next(iter(ds))
    assert xb.shape == (5, 16, 16, 3)
    np.testing.assert_allclose(xb.numpy(), 1.0)


@tensorflow_only
def test_imagenet_pipeline_on_jpegs(monkeypatch):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    jpegs = [
        tf.io.encode_jpeg(
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ).numpy()
        for h, w in [(60, 80), (90, 50), (70, 70)]
    ]
    _use_fake(monkeypatch, jpegs, np.array([1, 2, 999]))
    for augment_flag in (False, True):
        ds = data.get_dataset(
            "imagenet2012",
            "validation",
            batch_size=3,
            image_size=32,
            augment=augment_flag,
            seed=0,
        )
        xb, yb = next(iter(ds))
        assert xb.shape == (3, 32, 32, 3) and xb.dtype == tf.float32
        np.testing.assert_array_equal(yb.numpy(), [1, 2, 999])
        assert 0.0 <= xb.numpy().min() and xb.numpy().max() <= 1.0


# --- preprocessing functions ------------------------------------------------


@tensorflow_only
def test_cifar_crop_flip_is_a_shifted_maybe_flipped_copy():
    import tensorflow as tf

    from data import augment

    x = tf.random.stateless_uniform((32, 32, 3), seed=[1, 2]) * 0.5 + 0.25
    padded = np.pad(x.numpy(), [(4, 4), (4, 4), (0, 0)])
    seen_flips, seen_offsets = set(), set()
    for s in range(24):
        out = augment.cifar_crop_flip(x, tf.constant([s, 0])).numpy()
        assert out.shape == (32, 32, 3)
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if np.array_equal(
                out,
                (lambda c: c[:, ::-1] if flip else c)(
                    padded[dy : dy + 32, dx : dx + 32]
                ),
            )
        ]
        assert len(matches) == 1
        seen_offsets.add(matches[0][:2])
        seen_flips.add(matches[0][2])
    assert seen_flips == {False, True} and len(seen_offsets) > 5
    again = augment.cifar_crop_flip(x, tf.constant([3, 0]))
    np.testing.assert_array_equal(
        again, augment.cifar_crop_flip(x, tf.constant([3, 0]))
    )


@tensorflow_only
def test_random_resized_crop_window_and_output():
    import tensorflow as tf

    from data import augment

    shape = tf.constant([200, 300, 3])
    for s in range(30):
        begin, size = augment._sample_crop_window(
            shape, tf.constant([s, 1]), (0.08, 1.0), (3 / 4, 4 / 3)
        )
        (y0, x0, _), (h, w, _) = begin.numpy(), size.numpy()
        assert 0 <= y0 and y0 + h <= 200 and 0 <= x0 and x0 + w <= 300
        assert 0.08 * 0.95 <= h * w / 60000 <= 1.0
        if (h, w) != (200, 300):  # whole image is the fallback
            assert 0.75 * 0.95 <= w / h <= 4 / 3 * 1.05
    image = tf.cast(
        tf.random.stateless_uniform((90, 120, 3), [0, 0]) * 255, tf.uint8
    )
    out = augment.random_resized_crop(image, tf.constant([5, 5]), 48)
    assert out.shape == (48, 48, 3) and out.dtype == tf.float32
    assert 0.0 <= out.numpy().min() and out.numpy().max() <= 1.0
    jpeg = tf.io.encode_jpeg(image, quality=95)
    decoded = tf.io.decode_jpeg(jpeg)
    for s in range(3):
        seed = tf.constant([s, 9])
        a = augment.random_resized_crop(decoded, seed, 32)
        b = augment.random_resized_crop_jpeg(jpeg, seed, 32)
        assert float(tf.reduce_mean(tf.abs(a - b))) < 0.01  # same window


@tensorflow_only
def test_center_crop_keeps_the_center():
    import tensorflow as tf

    from data import augment

    left = np.zeros((256, 256, 3), np.uint8)
    image = tf.constant(np.concatenate([left, left + 255], axis=1))
    out = augment.center_crop(image, 224).numpy()
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    assert np.all(out[:, :110] == 0.0) and np.all(out[:, 114:] == 1.0)
    small = augment.center_crop(tf.zeros((300, 500, 3), tf.uint8), 112)
    assert small.shape == (112, 112, 3)


@tensorflow_only
def test_adapt_image_channels():
    import tensorflow as tf

    from data import augment

    gray = tf.random.stateless_uniform((2, 28, 28, 1), [0, 1])
    rgb = augment.adapt_image(gray, image_size=32, channels=3)
    assert rgb.shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="channels=1"):
        augment.adapt_image(rgb, channels=1)
