"""distribute.get_strategy on this CPU (split into 2 logical devices)."""

import json

import pytest
import tensorflow as tf

from training import distribute


def test_auto_on_cpu_is_one_device():
    s = distribute.get_strategy("auto")
    assert isinstance(s, tf.distribute.OneDeviceStrategy)
    assert s.num_replicas_in_sync == 1


def test_mirrored_uses_both_logical_cpus():
    s = distribute.get_strategy("mirrored")
    assert isinstance(s, tf.distribute.MirroredStrategy)
    assert s.num_replicas_in_sync == 2


def test_unknown_name_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"one of \('auto', 'one_device', "
                       r"'mirrored', 'multi_worker', 'tpu'\); got 'gpu'"):
        distribute.get_strategy("gpu")


def test_tpu_without_a_tpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no TPU could be reached"):
        distribute.get_strategy("tpu")


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
