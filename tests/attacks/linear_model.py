"""A linear softmax model with an analytic input gradient, shared by the
attack tests as a closed-form reference."""

import contextlib

import keras
import numpy as np
from keras import ops


def to_numpy(t):
    """Any backend's tensor (or a numpy array) as a numpy array."""
    return ops.convert_to_numpy(t)


def float64_scope():
    """A context in which float64 tensors exist: under JAX they need
    `jax_enable_x64` (TensorFlow always has them)."""
    if keras.backend.backend() == "jax":
        import jax
        return jax.enable_x64(True)
    return contextlib.nullcontext()


class LinearSoftmax:
    """logits = reshape(x, (batch, 12)) @ W + B on `(batch, 2, 2, 3)` inputs.

    `rng` draws W, B, then the test inputs, so one seed fixes everything.
    `grad_dtype` is the precision of the analytic gradient reference.
    """

    def __init__(self, classes=3, seed=0, grad_dtype="float32"):
        self.classes = classes
        self.grad_dtype = grad_dtype
        self.rng = np.random.default_rng(seed)
        self.W = self.rng.normal(size=(12, classes)).astype("float32")
        self.B = self.rng.normal(size=(classes,)).astype("float32")

    def __call__(self, x):
        return ops.matmul(ops.reshape(x, (-1, 12)), self.W) + self.B

    def inputs(self, n=6):
        """x float32 (n, 2, 2, 3) in [0.05, 0.95], y int32 (n,)."""
        x = self.rng.uniform(0.05, 0.95, size=(n, 2, 2, 3)).astype("float32")
        return x, (np.arange(n) % self.classes).astype("int32")

    def input_grad(self, x, y):
        """Analytic gradient of the cross-entropy with respect to x."""
        z = x.reshape(len(x), 12).astype(self.grad_dtype) @ self.W + self.B
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return ((p - np.eye(self.classes)[y]) @ self.W.T).reshape(x.shape)
