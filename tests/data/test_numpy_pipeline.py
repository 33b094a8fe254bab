"""The numpy input path (data.numpy_pipeline.ArrayDataset, a
keras.utils.PyDataset) and `data.get_backend_dataset`, which gives it on
backends other than TensorFlow: batch shapes, dtypes and values, seeded
per-epoch shuffling that visits every example once, repetition, resizing
and tiling, `fit`, and imports without TensorFlow."""

import gzip
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import data
from data import fashion_mnist
from data.numpy_pipeline import ArrayDataset
from data.options import PipelineOptions

N = 50


def _arrays(n=N):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)  # example id in the first pixel
    return images, np.arange(n, dtype=np.uint8) % 10


def _ids(x):
    return np.round(x[:, 0, 0, 0] * 255).astype(int)


def _epoch(ds):
    return np.concatenate([_ids(x) for x, _ in ds])


def _write_split(directory, split, images, labels):
    for name, array in zip(fashion_mnist.FILES[split], (images, labels)):
        dims = np.asarray(array.shape, dtype=">u4").tobytes()
        with gzip.open(directory / name, "wb") as f:
            f.write(bytes([0, 0, 8, array.ndim]) + dims + array.tobytes())


def test_batches_shapes_dtypes_and_values():
    images, labels = _arrays()
    ds = ArrayDataset(images, labels, PipelineOptions(batch_size=16))
    assert len(ds) == ds.num_batches == ds.batches_per_epoch == 4
    batches = list(ds)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    for i, (x, y) in enumerate(batches):
        assert x.shape[1:] == (28, 28, 1) and x.dtype == np.float32
        assert y.dtype == np.int32 and 0.0 <= x.min() and x.max() <= 1.0
        np.testing.assert_array_equal(
            x[..., 0], images[16 * i:16 * (i + 1)] / np.float32(255))
        np.testing.assert_array_equal(y, labels[16 * i:16 * (i + 1)])
    x_spec, y_spec = ds.element_spec
    assert tuple(x_spec.shape) == (None, 28, 28, 1)
    assert (x_spec.dtype, tuple(y_spec.shape), y_spec.dtype) == (
        "float32", (None,), "int32")
    with pytest.raises(IndexError):
        ds[4]


def test_every_example_once_per_epoch_in_a_new_seeded_order():
    images, labels = _arrays()

    def dataset(seed, **kwargs):
        return ArrayDataset(images, labels, PipelineOptions(
            batch_size=16, shuffle=True, seed=seed, **kwargs))

    ds = dataset(0)
    first = _epoch(ds)
    assert sorted(first) == list(range(N))  # each example once
    assert not np.array_equal(first, np.arange(N))
    np.testing.assert_array_equal(first, _epoch(ds))  # same epoch again
    ds.on_epoch_end()  # what fit() calls between epochs
    second = _epoch(ds)
    assert sorted(second) == list(range(N))
    assert not np.array_equal(first, second)
    again = dataset(0)
    np.testing.assert_array_equal(_epoch(again), first)
    again.on_epoch_end()
    np.testing.assert_array_equal(_epoch(again), second)
    assert not np.array_equal(_epoch(dataset(1)), first)
    # labels travel with their images
    x, y = dataset(3)[1]
    np.testing.assert_array_equal(y, labels[_ids(x)])
    # drop_remainder: 3 full batches, no example twice
    dropped = _epoch(dataset(0, drop_remainder=True))
    assert len(dropped) == 48 and len(set(dropped)) == 48
    assert tuple(dataset(0, drop_remainder=True).element_spec[0].shape) \
        == (16, 28, 28, 1)


def test_repeat_is_infinite_and_its_epochs_follow_the_batch_index():
    images, labels = _arrays()
    ds = ArrayDataset(images, labels, PipelineOptions(
        batch_size=10, shuffle=True, seed=5, repeat=True))
    assert ds.num_batches is None and ds.batches_per_epoch == 5
    epochs = [np.concatenate([_ids(ds[e * 5 + k][0]) for k in range(5)])
              for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(N))
    assert not np.array_equal(epochs[0], epochs[1])
    ds.on_epoch_end()  # a Keras epoch (steps_per_epoch) is not a data epoch
    np.testing.assert_array_equal(_ids(ds[5][0]), epochs[1][:10])
    it = iter(ds)
    stream = np.concatenate([_ids(next(it)[0]) for _ in range(15)])
    np.testing.assert_array_equal(stream, np.concatenate(epochs))


def test_unseeded_shuffle_still_visits_every_example():
    images, labels = _arrays()
    ds = ArrayDataset(images, labels, PipelineOptions(batch_size=7,
                                                      shuffle=True))
    assert sorted(_epoch(ds)) == list(range(N))


def test_resize_and_tile_as_the_tf_data_path():
    images, labels = _arrays(8)
    ds = ArrayDataset(images, labels, PipelineOptions(batch_size=8),
                      image_size=32, channels=3)
    x, _ = ds[0]
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert tuple(ds.element_spec[0].shape) == (8, 32, 32, 3)
    expected = keras.ops.image.resize(
        images[..., None].astype(np.float32) / 255, (32, 32),
        interpolation="bilinear")
    np.testing.assert_allclose(x[..., :1], np.clip(
        keras.ops.convert_to_numpy(expected), 0, 1), atol=1e-6)


def test_get_backend_dataset_follows_the_backend(tmp_path):
    images, labels = _arrays(30)
    _write_split(tmp_path, "test", images, labels)
    ds = data.get_backend_dataset(
        "fashion_mnist", "test", batch_size=8, data_dir=str(tmp_path),
        num_examples=20, shuffle=True, seed=0, drop_remainder=True)
    if keras.backend.backend() == "tensorflow":
        assert not isinstance(ds, ArrayDataset)  # tf.data, as get_dataset
        assert ds.element_spec[0].shape.as_list() == [8, 28, 28, 1]
    else:
        assert isinstance(ds, ArrayDataset) and len(ds) == 2
        ids = np.concatenate([_ids(x) for x, _ in ds.as_numpy_iterator()])
        assert len(set(ids)) == 16 and ids.max() < 20
    with pytest.raises(ValueError, match="batch_size"):
        data.get_backend_dataset("fashion_mnist", "test", batch_size=0,
                                 data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="'val'"):
        data.get_backend_dataset("fashion_mnist", "val", batch_size=2)
    with pytest.raises(ValueError, match="channels"):
        data.get_backend_dataset("fashion_mnist", "test", batch_size=2,
                                 channels=2, data_dir=str(tmp_path))


def test_fit_reads_a_repeated_array_dataset():
    images, labels = _arrays()
    ds = ArrayDataset(images, labels, PipelineOptions(
        batch_size=10, shuffle=True, seed=0, repeat=True,
        drop_remainder=True))
    net = keras.Sequential([keras.Input(ds.element_spec[0].shape[1:]),
                            keras.layers.Flatten(), keras.layers.Dense(10)])
    net.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    history = net.fit(ds, epochs=2, steps_per_epoch=7, shuffle=False,
                      verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.all(np.isfinite(history.history["loss"]))


_NO_TF = """
import sys

class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, _NoTensorFlow())
import data
from data.fashion_mnist import load_fashion_mnist
import evaluation
images, labels = load_fashion_mnist("test", sys.argv[1])
ds = data.get_backend_dataset("fashion_mnist", "test", batch_size=4,
                              data_dir=sys.argv[1], shuffle=True, seed=0)
x, y = ds[0]
assert (x.shape, str(y.dtype)) == ((4, 28, 28, 1), "int32"), x.shape
assert not [m for m in sys.modules if m.startswith("tensorflow")]
print("no tensorflow", type(ds).__name__)
"""


def test_imports_and_numpy_path_without_tensorflow(tmp_path):
    """`import data`, `load_fashion_mnist`, `get_backend_dataset` and
    `import evaluation` under JAX with TensorFlow unimportable."""
    pytest.importorskip("jax")
    images, labels = _arrays(10)
    _write_split(tmp_path, "test", images, labels)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                  if p])
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(_NO_TF),
                          str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=300, cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no tensorflow ArrayDataset" in run.stdout
