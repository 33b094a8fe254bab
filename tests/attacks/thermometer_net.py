"""A small thermometer-encoded CNN and NumPy references shared by the LS-PGA
and thermometer-training tests (the trained copy is the session fixture
`thermometer_net` of tests/conftest.py)."""

import keras
import numpy as np

from layers import ThermometerEncoding

LEVELS = 16
EPS = 0.1
T = (np.arange(LEVELS) / LEVELS).astype("float32")  # the layer's thresholds


def np_bucket(v):
    """The thermometer bucket of each value of `v` (float32 thresholds)."""
    return (np.asarray(v, "float32")[..., None] >= T).sum(-1) - 1


def thermometer_cnn(levels=LEVELS, mode="thermometer", width=8):
    """ThermometerEncoding -> conv 5x5 stride 2 -> dense 10 on 28x28x1."""
    inputs = keras.Input((28, 28, 1))
    h = ThermometerEncoding(levels=levels, mode=mode)(inputs)
    h = keras.layers.Conv2D(width, 5, strides=2, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def accuracy(net, x, y):
    return float(np.mean(np.argmax(net(x), -1) == y))
