"""Test-session setup; runs before TensorFlow initializes.

- KERAS_BACKEND=tensorflow unless the environment sets it (the JAX subset
  of CI runs with KERAS_BACKEND=jax: tests that need TensorFlow mark their
  module with `pytestmark = pytest.mark.tensorflow_only` and are skipped);
- under TensorFlow, the CPU split into 2 logical devices so
  MirroredStrategy runs for real;
- a `slow` marker skipped unless `--run_slow`;
- `fmnist_cnn`: a CNN naturally trained once per session on real
  Fashion-MNIST, reused by every attack-strength test;
- `thermometer_net`: a thermometer-encoded CNN trained once per session,
  shared by the LS-PGA, BPDA and thermometer-training tests.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def pytest_addoption(parser):
    parser.addoption("--run_slow", action="store_true", default=False,
                     help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "tensorflow_only: needs the TensorFlow backend (tf.data, "
        "tf.distribute, the TF-only converters); skipped under JAX")


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    skip_tf = pytest.mark.skip(reason=f"TensorFlow only; backend {backend}")
    slow = not config.getoption("--run_slow")
    skip = pytest.mark.skip(reason="slow: pass --run_slow to run")
    for item in items:
        if slow and "slow" in item.keywords:
            item.add_marker(skip)
        if backend != "tensorflow" and "tensorflow_only" in item.keywords:
            item.add_marker(skip_tf)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def fmnist_test():
    """The first 1000 real Fashion-MNIST test images: x float32
    (1000, 28, 28, 1) in [0, 1], y int32 (1000,)."""
    from data.fashion_mnist import load_fashion_mnist

    x, y = load_fashion_mnist("test")
    return (x[:1000, ..., None].astype("float32") / 255.0,
            y[:1000].astype("int32"))


@pytest.fixture(scope="session")
def fmnist_cnn(tmp_path_factory):
    """The Madry et al. MNIST CNN naturally trained for one epoch on the 60k
    real Fashion-MNIST training images (the setting in which three peer
    libraries measured PGD-20); saved once per session to a temp dir."""
    from data.fashion_mnist import load_fashion_mnist

    import models

    path = tmp_path_factory.mktemp("fmnist_cnn") / "cnn.keras"
    keras.utils.set_random_seed(1)
    x, y = load_fashion_mnist("train")
    x = x[..., None].astype("float32") / 255.0
    net = models.create_model("madry_cnn", num_classes=10, width=32)
    net.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True), metrics=["accuracy"])
    net.fit(x, y.astype("int32"), batch_size=100, epochs=1,
            verbose=0)
    net.save(path)
    return str(path)


@pytest.fixture(scope="session")
def thermometer_net(fmnist_test):
    """A thermometer CNN (tests/attacks/thermometer_net.py) naturally
    trained 2 epochs on 3000 real training images, and 256 test images:
    `(net, x float32 (256, 28, 28, 1) in [0, 1], y int32 (256,))`."""
    from data.fashion_mnist import load_fashion_mnist
    from tests.attacks.thermometer_net import thermometer_cnn

    keras.utils.set_random_seed(3)
    x, y = load_fashion_mnist("train")
    net = thermometer_cnn()
    net.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
    net.fit(x[:3000, ..., None].astype("float32") / 255.0,
            y[:3000].astype("int32"), batch_size=100, epochs=2, verbose=0)
    return net, fmnist_test[0][:256], fmnist_test[1][:256]


def load_cnn(path):
    return keras.saving.load_model(path)


np.set_printoptions(precision=4, suppress=True)
