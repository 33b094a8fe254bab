"""The one place where distribution strategies are chosen.

`get_strategy(name, tpu=None)` follows the TF Model Garden switch
(`official/common/distribute_utils.py`), kept small; the strategies
themselves are the backend's (`core.backends`): `tf.distribute` under
TensorFlow, `keras.distribution.DataParallel` under JAX. `core.backends`
(and with it Keras and TensorFlow) is imported at the first call, so that
train.py and evaluate.py check their flags in a second, not ten.
"""

from __future__ import annotations

import importlib
from typing import Any

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def get_strategy(name: str = "auto", tpu: str | None = None) -> Any:
    """Builds a distribution strategy for the current Keras backend.

    Under TensorFlow this is a `tf.distribute.Strategy`
    (core/backends/tensorflow.py). Under JAX it is a small object with the
    same `scope()` / `num_replicas_in_sync` / `cluster_resolver` surface
    that sets `keras.distribution.DataParallel` over the local devices when
    there are several (core/backends/jax.py); "multi_worker" and "tpu" are
    TensorFlow's.

    Args:
        name: one of `STRATEGIES`:
            "auto": mirrored over all GPUs if more than one is visible,
                one_device on the GPU if exactly one, else one_device on CPU;
            "one_device": the first GPU, else the CPU;
            "mirrored": `MirroredStrategy` over all GPUs; without GPUs, over
                all logical CPU devices (tests split the CPU in two); under
                JAX, data parallelism over all local devices;
            "multi_worker": `MultiWorkerMirroredStrategy`, reading the
                cluster from the `TF_CONFIG` environment variable (a single
                local worker when it is unset). Create it before any other
                TensorFlow op runs;
            "tpu": `TPUStrategy` on the TPU named by `tpu` (a name, a
                `grpc://` address, or "" / None for a local TPU VM).
        tpu: TPU name or address for "tpu"; ignored otherwise.

    Returns:
        The strategy.

    Raises:
        ValueError: unknown `name` (lists `STRATEGIES`), no TPU found, or a
            TensorFlow-only strategy under another backend.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {name!r}")
    return _backends().get_strategy(name, tpu)


def is_chief(strategy: Any) -> bool:
    """True unless this process is a non-chief worker of a multi-worker
    cluster (only the chief writes the run's shared artifacts)."""
    return _backends().is_chief(strategy)


def worker_id(strategy: Any) -> str:
    """"chief", or "<task_type>_<task_id>" for other workers."""
    return _backends().worker_id(strategy)


def _backends():
    return importlib.import_module("core.backends")
