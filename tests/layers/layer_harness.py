"""Shared checks for the Keras layers in `layers/`, keras-hub style.

Usage from a test module::

    from tests.layers.layer_harness import run_layer_test

    def test_layer_contract():
        run_layer_test(MyLayer, {"levels": 4}, (2, 5, 5, 3), (2, 5, 5, 12))
"""

import os
import tempfile

import keras
import numpy as np


def _configs_match(layer, other):
    a, b = layer.get_config(), other.get_config()
    assert a == b, f"config changed in round trip:\n{a}\n{b}"


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_output_dtype="float32",
    expected_num_trainable_weights=0,
    expected_num_non_trainable_weights=0,
    input_data=None,
    run_training=True,
):
    """Runs the standard contract checks on one layer class.

    Checks, in order:
    1. `get_config()` / `from_config()` round trip gives an equal config;
    2. `keras.saving.serialize_keras_object` / `deserialize_keras_object`
       round trip gives the same class and an equal config;
    3. a symbolic call on `keras.Input(shape=input_shape[1:])` returns a
       KerasTensor of shape `(None,) + expected_output_shape[1:]`, and
       `compute_output_shape(input_shape)` returns `expected_output_shape`;
    4. an eager call returns `expected_output_shape` and
       `expected_output_dtype`; for layers whose class attribute
       `randomized` is not True, the `from_config` clone gives the same
       output;
    5. the built layer holds the expected numbers of trainable and
       non-trainable weights;
    6. if `run_training`, one `fit` step of `Input -> layer -> Flatten ->
       Dense(2)` on float32 data in `[0, 1]` gives a finite loss.

    Args:
        layer_cls: the `keras.layers.Layer` subclass under test.
        init_kwargs: dict of constructor arguments.
        input_shape: full input shape including the batch dimension,
            e.g. `(2, 8, 8, 3)` for `(batch, height, width, channels)`.
        expected_output_shape: full expected output shape, batch included.
        expected_output_dtype: dtype name of the eager output.
        expected_num_trainable_weights: int.
        expected_num_non_trainable_weights: int.
        input_data: optional float32 array of shape `input_shape`; by
            default uniform in `[0, 1]` with a fixed numpy seed.
        run_training: whether to run the one-step `fit` check.

    Returns:
        The eager output of the layer built from `init_kwargs`, as numpy.

    Raises:
        AssertionError: when a check fails.
    """
    input_shape = tuple(input_shape)
    expected_output_shape = tuple(expected_output_shape)
    if input_data is None:
        rng = np.random.default_rng(0)
        input_data = rng.uniform(size=input_shape).astype("float32")

    # 1. get_config / from_config.
    layer = layer_cls(**init_kwargs)
    clone = layer_cls.from_config(layer.get_config())
    _configs_match(layer, clone)

    # 2. serialize / deserialize through the registered name.
    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls, type(revived)
    _configs_match(layer, revived)

    # 3. symbolic call and compute_output_shape.
    sym = layer_cls(**init_kwargs)(keras.Input(shape=input_shape[1:]))
    assert isinstance(sym, keras.KerasTensor), type(sym)
    assert tuple(sym.shape) == (None,) + expected_output_shape[1:], sym.shape
    computed = tuple(layer.compute_output_shape(input_shape))
    assert computed == expected_output_shape, computed

    # 4. eager call: shape, dtype, determinism of the clone.
    out = layer(input_data)
    assert tuple(out.shape) == expected_output_shape, out.shape
    dtype = keras.backend.standardize_dtype(out.dtype)
    assert dtype == expected_output_dtype, dtype
    out = keras.ops.convert_to_numpy(out)
    if not getattr(layer_cls, "randomized", False):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(clone(input_data)), out, atol=1e-6
        )

    # 5. weight counts.
    n_train = len(layer.trainable_weights)
    n_frozen = len(layer.non_trainable_weights)
    assert n_train == expected_num_trainable_weights, n_train
    assert n_frozen == expected_num_non_trainable_weights, n_frozen

    # 6. one training step inside a tiny model.
    if run_training:
        _fit_one_step(layer_cls, init_kwargs, input_data)
    return out


def _fit_one_step(layer_cls, init_kwargs, input_data):
    inputs = keras.Input(shape=input_data.shape[1:])
    x = layer_cls(**init_kwargs)(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    y = np.arange(len(input_data)) % 2
    history = model.fit(
        input_data, y, batch_size=len(input_data), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][-1]), history.history


def save_load_outputs(model, x):
    """Saves `model` to a temporary `.keras` file, reloads it and returns
    `(original_output, reloaded_output)` on `x` as numpy arrays."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
    return (
        keras.ops.convert_to_numpy(model(x)),
        keras.ops.convert_to_numpy(reloaded(x)),
    )


def compiled_step(layer):
    """`x -> (layer(x), d sum(layer(x)) / dx)` compiled with
    `core.backends.compile_fn` (`tf.function` / `jax.jit`, the layer's
    variables passed live): call it repeatedly to see a random layer's
    state advance across compiled calls, on either backend."""
    from keras import ops

    from core import backends

    def step(layer, x):
        def objective(v):
            y = layer(v)
            return ops.sum(y), y

        _, y, grad = backends.value_and_grad(objective, x)
        return y, grad

    compiled = backends.compile_fn(step)
    return lambda x: compiled(layer, ops.convert_to_tensor(x))


def traced_step(layer):
    """A `tf.function` mapping x to `(layer(x), d sum(layer(x)) / dx)`;
    call it repeatedly to see a random layer's state advance in a graph.
    TensorFlow only (tests of `tf.function` itself, e.g. its concrete
    functions); backend-neutral tests use `compiled_step`."""
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y)
        return y, tape.gradient(loss, x)

    return step
