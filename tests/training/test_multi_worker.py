"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 (TF_CONFIG)
run a few adversarial training steps through train.py and end on the same
weights as one device at the same global batch.

This also guards the Keras workaround in trainer.py (keras-team/keras#20585):
if a Keras upgrade breaks it, this test fails loudly.
"""

import json
import socket

import numpy as np

from tests.train_utils import final_weights, train_process

RECIPE = "pgd_at_cnn_fmnist:smoke"
# L2 PGD from x itself, and SGD: see DETERMINISTIC in test_train_smoke.py.
DETERMINISTIC = ("--recipe.attack.rand_init=False",
                 "--recipe.attack.norm=2", "--recipe.attack.eps=1.0",
                 "--recipe.attack.step_size=0.5",
                 "--recipe.optimizer.name=sgd",
                 "--recipe.optimizer.learning_rate=0.05")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_match_one_device(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        tf_config = {"cluster": {"worker": workers},
                     "task": {"type": "worker", "index": i}}
        procs.append(train_process(
            tmp_path / "mw", RECIPE, *DETERMINISTIC, strategy="multi_worker",
            env={"TF_CONFIG": json.dumps(tf_config)}))
    single = train_process(tmp_path / "one", RECIPE, *DETERMINISTIC,
                           strategy="one_device")
    outs = [p.communicate(timeout=400)[0] for p in procs + [single]]
    for p, out in zip(procs + [single], outs):
        assert p.returncode == 0, out
    assert "replicas" in (tmp_path / "mw" / "train_summary.json").read_text()
    summary = json.loads((tmp_path / "mw" / "train_summary.json").read_text())
    assert summary["replicas"] == 2
    one = final_weights(tmp_path / "one")
    chief = final_weights(tmp_path / "mw")
    other = final_weights(tmp_path / "mw" / "workers" / "worker_1")
    assert not np.allclose(one[0], _initial_first_kernel(tmp_path))
    for a, b, c in zip(one, chief, other):
        # Synchronous all-reduce keeps workers equal; this checks that the
        # non-chief wrote its own model under workers/.
        np.testing.assert_allclose(b, c, atol=1e-6)
        np.testing.assert_allclose(a, b, atol=2e-5)  # and match one device


def _initial_first_kernel(tmp_path):
    """The first kernel before training, to show that training moved it."""
    import keras

    import data
    import models

    info = data.get_info("fashion_mnist")
    keras.utils.set_random_seed(0)
    net = models.create_model("madry_cnn", num_classes=10, width=8,
                              input_shape=(28, 28, 1), mean=info.mean,
                              std=info.std)
    return net.get_weights()[0]
