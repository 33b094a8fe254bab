"""The one place where `tf.distribute` strategies are made.

`get_strategy(name, tpu=None)` follows the TF Model Garden switch
(`official/common/distribute_utils.py`), kept small.
"""

from __future__ import annotations

import glob
import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def _devices(kind: str) -> list[str]:
    return [d.name for d in tf.config.list_logical_devices(kind)]


def get_strategy(name: str = "auto", tpu: str | None = None
                 ) -> tf.distribute.Strategy:
    """Builds a distribution strategy.

    Args:
        name: one of `STRATEGIES`:
            "auto": mirrored over all GPUs if more than one is visible,
                one_device on the GPU if exactly one, else one_device on CPU;
            "one_device": the first GPU, else the CPU;
            "mirrored": `MirroredStrategy` over all GPUs; without GPUs, over
                all logical CPU devices (tests split the CPU in two);
            "multi_worker": `MultiWorkerMirroredStrategy`, reading the
                cluster from the `TF_CONFIG` environment variable (a single
                local worker when it is unset). Create it before any other
                TensorFlow op runs;
            "tpu": `TPUStrategy` on the TPU named by `tpu` (a name, a
                `grpc://` address, or "" / None for a local TPU VM).
        tpu: TPU name or address for "tpu"; ignored otherwise.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: unknown `name` (lists `STRATEGIES`), or no TPU found.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {name!r}")
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
