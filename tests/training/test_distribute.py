"""distribute.get_strategy on this CPU (split into 2 logical devices)."""

import json

import keras
import pytest

from training import distribute

TF = keras.backend.backend() == "tensorflow"
tf_only = pytest.mark.tensorflow_only
if TF:
    import tensorflow as tf


@pytest.mark.skipif(TF, reason="the JAX strategy")
def test_jax_strategy_is_data_parallel_over_the_local_devices():
    import jax

    s = distribute.get_strategy("auto")
    assert s.num_replicas_in_sync == len(jax.devices())
    assert distribute.get_strategy("one_device").num_replicas_in_sync == 1
    with s.scope():
        pass
    assert distribute.is_chief(s) and distribute.worker_id(s) == "chief"
    with pytest.raises(ValueError, match="multi_worker is a tf.distribute"):
        distribute.get_strategy("multi_worker")


@tf_only
def test_auto_on_cpu_is_one_device():
    s = distribute.get_strategy("auto")
    assert isinstance(s, tf.distribute.OneDeviceStrategy)
    assert s.num_replicas_in_sync == 1


@tf_only
def test_mirrored_uses_both_logical_cpus():
    s = distribute.get_strategy("mirrored")
    assert isinstance(s, tf.distribute.MirroredStrategy)
    assert s.num_replicas_in_sync == 2


def test_unknown_name_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"one of \('auto', 'one_device', "
                       r"'mirrored', 'multi_worker', 'tpu'\); got 'gpu'"):
        distribute.get_strategy("gpu")


@tf_only
def test_tpu_without_a_tpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no TPU could be reached"):
        distribute.get_strategy("tpu")


@tf_only
def test_chief_detection(monkeypatch):
    class Resolver:
        task_type, task_id = "worker", 1

    class Fake(tf.distribute.MultiWorkerMirroredStrategy):
        def __init__(self):  # no cluster needed for the predicate
            pass

        cluster_resolver = Resolver()

    cluster = {"cluster": {"worker": ["a:1", "b:2"]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    assert not distribute.is_chief(Fake())
    assert distribute.worker_id(Fake()) == "worker_1"
    Resolver.task_id = 0
    assert distribute.is_chief(Fake())
    assert distribute.is_chief(tf.distribute.get_strategy())
