"""Small networks, batches and a NumPy KL divergence shared by the TRADES
tests (tests/attacks/test_trades_kl.py, tests/training/test_trades.py)."""

import keras
import numpy as np

SHAPE = (4, 4, 1)
CLASSES = 3


def linear_net(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(
        keras.layers.Flatten()(inputs)))


def bn_net(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    h = keras.layers.Dense(8)(keras.layers.Flatten()(inputs))
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(h))


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, *SHAPE)).astype("float32")
    x[:, 0, :2] = 0.0  # pixels on the box's faces
    x[:, 1, :2] = 1.0
    return x, (np.arange(n) % CLASSES).astype("int32")


def log_softmax(z):
    z = np.asarray(z, "float64")
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_kl(zp, zq):
    lp, lq = log_softmax(zp), log_softmax(zq)
    return (np.exp(lp) * (lp - lq)).sum(-1)
