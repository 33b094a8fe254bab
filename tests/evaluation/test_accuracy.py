"""evaluation.robust_accuracy on every input the two backends feed it:
numpy batches, a keras.utils.PyDataset (data.numpy_pipeline) and, under
TensorFlow, a tf.data.Dataset with and without a tf.distribute strategy.
Hand-made model and attacks make every count known in advance."""

import keras
import numpy as np
import pytest
from keras import ops

from data.numpy_pipeline import ArrayDataset
from data.options import PipelineOptions
from evaluation import robust_accuracy

N, BATCH = 50, 16


def _model():
    """Class = the brightest of 10 fixed pixels (a linear model whose
    logits are those pixels' values)."""
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(10, use_bias=False)])
    kernel = np.zeros((16, 10), np.float32)
    kernel[np.arange(10), np.arange(10)] = 1.0
    net.set_weights([kernel])
    return net


def _data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, N).astype(np.int32)
    x = np.full((N, 16), 0.1, np.float32)
    x[np.arange(N), y] = 0.6
    y[:5] = (y[:5] + 1) % 10  # 5 images wrong when clean
    return x.reshape(N, 4, 4, 1), y


def _flip_to(model, x, y):
    """Moves each image's brightness to pixel `y` (its target, or its
    label untargeted); changes 2 pixels by 0.5: L-inf 0.5, L2 sqrt(0.5)."""
    del model
    flat = ops.reshape(x, (-1, 16))
    top = ops.argmax(flat, axis=-1)
    onehot_top = ops.one_hot(top, 16)
    onehot_y = ops.one_hot(ops.cast(y, "int32"), 16)
    moved = flat + 0.5 * (onehot_y - onehot_top)
    return ops.reshape(moved, ops.shape(x))


def _fool(model, x, y):
    """Untargeted: moves the brightness to class (y + 1) % 10."""
    return _flip_to(model, x, (ops.cast(y, "int32") + 1) % 10)


def _batches(x, y):
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, N, BATCH)]


def _py_dataset(x, y):
    return ArrayDataset((x * 255).round().astype(np.uint8)[..., 0], y,
                        PipelineOptions(batch_size=BATCH))


def test_counts_on_numpy_batches_and_a_py_dataset():
    net, (x, y) = _model(), _data()
    for ds in (_batches(x, y), _py_dataset(x, y)):
        out = robust_accuracy(net, ds, _fool, num_classes=10, verbose=0)
        assert out["n"] == N and out["clean_acc"] == pytest.approx(45 / N)
        # the 5 clean mistakes sat on y - 1: moved to y + 1, still wrong
        assert out["robust_acc"] == 0.0
        assert out["attack_success_rate"] is None
        assert out["max_linf"] == pytest.approx(0.5, abs=1e-2)
        assert out["max_l2"] == pytest.approx(np.sqrt(0.5), abs=1e-2)
    identity = robust_accuracy(net, _batches(x, y), lambda m, a, b: a,
                               num_classes=10, verbose=0)
    assert identity["robust_acc"] == identity["clean_acc"]
    assert identity["max_linf"] == identity["max_l2"] == 0.0


def test_targeted_targets_are_seeded_wrong_labels():
    net, (x, y) = _model(), _data()
    seen = []

    def record(model, xb, target):
        seen.append(np.asarray(target))
        return _flip_to(model, xb, target)

    out = robust_accuracy(net, _batches(x, y), record, num_classes=10,
                          targeted=True, seed=7, verbose=0)
    first = np.concatenate(seen)
    assert np.all(first != y) and first.min() >= 0 and first.max() <= 9
    assert out["attack_success_rate"] == 1.0 and out["robust_acc"] == 0.0
    seen.clear()
    robust_accuracy(net, _batches(x, y), record, num_classes=10,
                    targeted=True, seed=7, verbose=0, eager=True)
    np.testing.assert_array_equal(np.concatenate(seen), first)
    seen.clear()
    robust_accuracy(net, _batches(x, y), record, num_classes=10,
                    targeted=True, seed=8, verbose=0)
    assert not np.array_equal(np.concatenate(seen), first)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("eager", [False, True])
def test_tf_data_and_a_mirrored_strategy_count_the_same(eager):
    """Under tf.distribute (2 logical CPUs, tests/conftest.py) every
    replica counts its share: tf.data batches, numpy batches and a
    PyDataset (split in np.array_split shares) give the same totals as one
    device."""
    import tensorflow as tf

    net, (x, y) = _model(), _data()
    local = robust_accuracy(net, _batches(x, y), _fool, num_classes=10,
                            verbose=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    assert robust_accuracy(net, ds, _fool, num_classes=10, verbose=0,
                           eager=eager) == local
    strategy = tf.distribute.MirroredStrategy(
        tf.config.list_logical_devices("CPU")[:2],
        cross_device_ops=tf.distribute.ReductionToOneDevice())
    for batches in (ds, _batches(x, y)):
        out = robust_accuracy(net, batches, _fool, num_classes=10,
                              strategy=strategy, verbose=0, eager=eager)
        assert out == pytest.approx(local)
    py_local = robust_accuracy(net, _py_dataset(x, y), _fool,
                               num_classes=10, verbose=0)
    out = robust_accuracy(net, _py_dataset(x, y), _fool, num_classes=10,
                          strategy=strategy, verbose=0, eager=eager)
    assert out == pytest.approx(py_local)
