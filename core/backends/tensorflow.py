"""The TensorFlow half of `core.backends` (see its module doc for the
contract of each function). TensorFlow records gradients on a
`tf.GradientTape`, compiles with `tf.function` (optionally XLA) and mutates
variables in place, so a stateful-style training step is simply called
(as in keras/src/backend/tensorflow/trainer.py)."""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Callable, Sequence

import keras
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


def fori_loop(model: Any, lower: Any, upper: Any, body: Callable,
              init: Any) -> Any:
    """`keras.ops.fori_loop(lower, upper, body, init)`: a `tf.while_loop`,
    inside which the model's variables (a random layer's seed state) are
    assigned as usual. `model` is used under JAX only."""
    del model
    return keras.ops.fori_loop(lower, upper, body, init)


def while_loop(model: Any, cond: Callable, body: Callable,
               loop_vars: Any) -> Any:
    """`keras.ops.while_loop(cond, body, loop_vars)` (see `fori_loop`)."""
    del model
    return keras.ops.while_loop(cond, body, loop_vars)


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


def unseeded_uniform(shape: Any, minval: Any = 0.0, maxval: Any = 1.0,
                     dtype: str = "float32") -> Any:
    """Uniform draws from TensorFlow's global stateful generator (what
    `seed=None` means here; `keras.random` would create a variable, which a
    `tf.function` refuses after its first trace)."""
    return tf.random.uniform(shape, minval, maxval, dtype=tf.as_dtype(dtype))


def unseeded_normal(shape: Any, dtype: str = "float32") -> Any:
    """Standard normal draws from TensorFlow's global stateful generator."""
    return tf.random.normal(shape, dtype=tf.as_dtype(dtype))


def is_traced(x: Any = None) -> bool:
    """True inside a `tf.function` (values cannot be read)."""
    del x
    return not tf.executing_eagerly()


# -- tf.distribute: the TensorFlow multi-device path ------------------------
# Follows the TF Model Garden switch (official/common/distribute_utils.py).

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def _devices(kind: str) -> list[str]:
    return [d.name for d in tf.config.list_logical_devices(kind)]


def get_strategy(name: str = "auto", tpu: str | None = None
                 ) -> tf.distribute.Strategy:
    """Builds the `tf.distribute` strategy `name` (one of
    `STRATEGIES`, checked by training.distribute.get_strategy, which
    documents each).

    Raises:
        ValueError: no TPU could be reached for "tpu".
    """
    if name == "multi_worker":  # before anything initializes the runtime
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu)
    gpus, cpus = _devices("GPU"), _devices("CPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])
    if name == "mirrored" and gpus:
        return tf.distribute.MirroredStrategy(devices=gpus)
    if name == "mirrored":
        # CPU replicas reduce on one device: the collective-op path reuses
        # instance keys across strategies made in one process and aborts
        # with "Shape mismatch in the collective instance".
        return tf.distribute.MirroredStrategy(
            devices=cpus,
            cross_device_ops=tf.distribute.ReductionToOneDevice())


def _has_local_tpu() -> bool:
    """A TPU VM exposes its chips as /dev/accel* (v2-v4) or /dev/vfio/*."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    if not tpu and not _has_local_tpu():
        # Without a name the resolver would query the GCE metadata server
        # and wait on the network; fail at once instead.
        raise ValueError(
            "no TPU could be reached with tpu=None (this machine has no "
            "local TPU); pass --tpu=NAME or run on a TPU VM, or choose "
            f"another --strategy from {STRATEGIES}")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ValueError(
            f"no TPU could be reached with tpu={tpu!r} ({e}); pass --tpu=NAME"
            " or run on a TPU VM, or choose another --strategy from "
            f"{STRATEGIES}") from e
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker
    cluster (only the chief writes the run's shared artifacts)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    if resolver is None or not resolver.task_type:
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def worker_id(strategy: tf.distribute.Strategy) -> str:
    """"chief", or "<task_type>_<task_id>" for other workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if is_chief(strategy) or resolver is None:
        return "chief"
    return f"{resolver.task_type}_{resolver.task_id}"
