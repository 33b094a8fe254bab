"""The TensorFlow half of `core.backends` (see its module doc for the
contract of each function). TensorFlow records gradients on a
`tf.GradientTape`, compiles with `tf.function` (optionally XLA) and mutates
variables in place, so a stateful-style training step is simply called
(as in keras/src/backend/tensorflow/trainer.py)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import tensorflow as tf

NO_GRADIENT = (
    "the model's logits have no gradient with respect to x (a "
    "non-differentiable layer such as ThermometerEncoding or "
    "BitDepthReduction?); attack it through attacks.bpda.bpda")


def value_and_grad(fn: Callable[[Any], tuple[Any, Any]], x: Any
                   ) -> tuple[Any, Any, Any]:
    """`(objective, aux, d objective / d x)` for `fn(x) -> (scalar
    objective, aux)`; the gradient has the shape and dtype of `x`.

    Raises:
        ValueError: the objective does not depend on `x` differentiably
            (known while tracing).
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        objective, aux = fn(x)
    grad = tape.gradient(objective, x)
    if grad is None:
        raise ValueError(NO_GRADIENT)
    return objective, aux, grad


def gradients(loss_fn: Callable[..., tuple[Any, Any]],
              variables: Sequence[Any], tensors: Sequence[Any] = ()
              ) -> tuple[Any, Any, list, list]:
    """`(loss, aux, grads of variables, grads of tensors)` for
    `loss_fn(*tensors) -> (scalar loss, aux)`. Variable updates made inside
    `loss_fn` (BatchNorm statistics, metrics) happen in place."""
    tensors = [tf.convert_to_tensor(t) for t in tensors]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        loss, aux = loss_fn(*tensors)
    grads = tape.gradient(loss, [list(variables), tensors])
    return loss, aux, grads[0], grads[1]


def compile_fn(fn: Callable, *, jit_compile: bool = False,
               static_argnames: Sequence[str] = ()) -> Callable:
    """`fn(model, *tensors, **static)` compiled with `tf.function` (XLA when
    `jit_compile`). Python values (the model, strings, bools) are static:
    a new value retraces; pass numbers as tensors to avoid that."""
    del static_argnames  # tf.function treats Python values as static
    return tf.function(fn, reduce_retracing=True, jit_compile=jit_compile)


def train_step(model: Any, args: tuple, step_fn: Callable[[Any], dict]
               ) -> dict:
    """Runs `step_fn(data) -> logs` on the live variables (Keras's TF
    `train_step(data)` convention)."""
    (data,) = args
    return step_fn(data)


def prepared_train_step(model: Any, args: tuple, prepare: Callable,
                        parent_step: Callable) -> Any:
    """Keras's own TF step (`parent_step(batch)`) on `prepare(data)`."""
    (data,) = args
    return parent_step(prepare(data))


def _seed(seed: Any) -> Any:
    return tf.cast(tf.convert_to_tensor(seed), tf.int64) % (2 ** 31 - 1)


def stateless_uniform(shape: Any, seed: Any, minval: Any = 0.0,
                      maxval: Any = 1.0, dtype: str = "float32") -> Any:
    """Uniform draws in `[minval, maxval)` keyed by `seed`, a pair of ints
    (Python or an int tensor of shape (2,)); integer dtypes draw integers.
    """
    return tf.random.stateless_uniform(shape, _seed(seed), minval, maxval,
                                       dtype=tf.as_dtype(dtype))


def stateless_normal(shape: Any, seed: Any, dtype: str = "float32") -> Any:
    """Standard normal draws keyed by the seed pair `seed`."""
    return tf.random.stateless_normal(shape, _seed(seed),
                                      dtype=tf.as_dtype(dtype))


def is_traced(x: Any = None) -> bool:
    """True inside a `tf.function` (values cannot be read)."""
    del x
    return not tf.executing_eagerly()
