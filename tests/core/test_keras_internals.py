"""core/keras_internals.py, the only user of private Keras API: each use
still exists and still does what the project relies on. A failure here
after a Keras upgrade names the symbol that moved; fix it in that module."""

import inspect

import keras
import numpy as np
import pytest
from keras import ops

from core import backends
from core import keras_internals as ki


def _functional():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


class _Subclassed(keras.Model):
    def call(self, x):
        return x


def test_functional_model_types_tell_functional_from_subclassed():
    assert isinstance(_functional(), ki.FUNCTIONAL_MODEL_TYPES)
    assert isinstance(keras.Sequential([keras.layers.Dense(2)]),
                      ki.FUNCTIONAL_MODEL_TYPES)
    assert not isinstance(_Subclassed(), ki.FUNCTIONAL_MODEL_TYPES)


def test_track_loss_feeds_the_built_in_loss_metric():
    model = _functional()
    model.compile(optimizer="sgd", loss="mse")
    ki.track_loss(model, ops.convert_to_tensor(2.0), 4)
    ki.track_loss(model, ops.convert_to_tensor(5.0), 2)
    logs = {m.name: float(m.result()) for m in model.metrics}
    assert logs["loss"] == pytest.approx((2.0 * 4 + 5.0 * 2) / 6)


@pytest.mark.tensorflow_only
def test_track_loss_unscales_under_a_mirrored_strategy():
    # Keras scales a replica's loss by 1 / replicas; the tracker undoes it.
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _functional()
        model.compile(optimizer="sgd", loss="mse")

    def replica():
        ki.track_loss(model, tf.constant(0.5), 3)

    strategy.run(replica)
    loss = [m for m in model.metrics if m.name == "loss"][0]
    assert float(loss.result()) == pytest.approx(1.0)


@pytest.mark.tensorflow_only
def test_is_multi_worker_is_false_on_one_process():
    import tensorflow as tf

    assert not ki.is_multi_worker(tf.distribute.get_strategy())
    assert not ki.is_multi_worker(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))


@pytest.mark.parametrize("name", ["one_device", "mirrored"])
def test_is_multi_worker_is_false_for_a_local_strategy(name):
    """Each backend's local strategy (tf.distribute / DataParallel)."""
    assert not ki.is_multi_worker(backends.get_strategy(name))


@pytest.mark.tensorflow_only
def test_the_overridden_private_methods_still_exist():
    """MultiWorkerFitFix overrides `_maybe_symbolic_build(iterator,
    data_batch)` and calls `_symbolic_build(data_batch=...)`; fit() must
    still call the first, with these parameter names. (Keras's TensorFlow
    trainer only: the JAX trainer has no `_maybe_symbolic_build`, and the
    override is never called there.)"""
    for name, params in (("_maybe_symbolic_build", ("iterator",
                                                    "data_batch")),
                         ("_symbolic_build", ("data_batch",))):
        method = getattr(keras.Model, name, None)
        assert method is not None, f"keras.Model.{name} is gone"
        assert set(params) <= set(inspect.signature(method).parameters), (
            f"keras.Model.{name} changed its signature")


def test_multi_worker_fix_is_transparent_on_one_worker():
    class Fixed(ki.MultiWorkerFitFix, keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

        def train_step(self, *args):
            # TF: `(data)` -> logs; JAX: `(state, data)` -> (logs, state),
            # which pass through on one worker.
            return self.per_worker_logs(super().train_step(*args))

    model = Fixed()
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 3), "float32")
    history = model.fit(x, np.zeros((8, 2), "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.per_worker_logs({"a": 1.0}) == {"a": 1.0}


def test_flatten_layers_reaches_nested_models():
    inner = _functional()
    inputs = keras.Input((3,))
    outer = keras.Model(inputs, keras.layers.ReLU()(inner(inputs)))
    names = [layer.name for layer in ki.flatten_layers(outer)]
    assert names[0] == outer.name and inner.name in names
    assert inner.layers[-1].name in names  # the Dense inside `inner`
    assert outer.name not in [layer.name for layer in ki.flatten_layers(
        outer, include_self=False)]


def test_uses_weight_decay_follows_the_exclusion_rules():
    opt = keras.optimizers.SGD(0.1, weight_decay=1e-4)
    opt.exclude_from_weight_decay(var_names=["bias"])
    kernel = keras.Variable(np.ones((2, 2)), name="kernel")
    bias = keras.Variable(np.ones((2,)), name="bias")
    opt.build([kernel, bias])
    assert ki.uses_weight_decay(opt, kernel)
    assert not ki.uses_weight_decay(opt, bias)
