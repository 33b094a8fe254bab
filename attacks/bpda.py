"""Backward Pass Differentiable Approximation (BPDA).

`bpda(fn, surrogate)` returns a callable whose forward value is exactly
`fn(x)` and whose backward pass is the vector-Jacobian product of
`surrogate` at `x` (the identity when `surrogate` is None, which requires
`fn(x)` to have the shape of `x`, as for input purifiers such as
BitDepthReduction). Implemented with `tf.custom_gradient`, so the forward
value is bit-identical to `fn(x)` (no `s + stop_gradient(f - s)`
rounding).

Compose with a classifier into the attack model, e.g. for thermometer
encoding (Athalye et al. 2018, Sec. 5.2.1):

    therm = ThermometerEncoding(levels=16)            # the defense's layer
    enc = bpda(therm, surrogate=therm.soft_encode)
    attack_model = lambda x: classifier(enc(x), training=False)
    x_adv = pgd(attack_model, x, y, eps=8 / 255, step_size=2 / 255, steps=40)

(equivalently `ThermometerEncoding(surrogate="soft")` has the same
straight-through behaviour built in). For a defended model whose first
layer is the non-differentiable one, `bpda(model.layers[0])` followed by the
remaining layers gives the attack model. Combine with `eot` for randomized
and non-differentiable defenses: `eot(attack_model, k)`.

References:
    Athalye, Carlini, Wagner 2018, "Obfuscated Gradients Give a False Sense
    of Security", ICML, arXiv 1802.00420, Sec. 4.1 (BPDA; identity
    surrogate for g(x) ~ x).
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf


def _call(fn: Callable, x: tf.Tensor, training: bool) -> tf.Tensor:
    if isinstance(fn, keras.layers.Layer):
        return fn(x, training=training)
    return fn(x)


class BPDAFunction:
    """Callable `g(x, training=False)`: forward `wrapped(x)`, backward the
    VJP of `surrogate` (identity if None); built by `bpda`.

    Attributes:
        wrapped: the exact (possibly non-differentiable) function.
        surrogate: the differentiable approximation, or None (identity).
    """

    def __init__(self, fn: Callable, surrogate: Callable | None):
        self.wrapped = fn
        self.surrogate = surrogate

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        fn, surrogate = self.wrapped, self.surrogate

        @tf.custom_gradient
        def _forward(x_in):
            y = tf.stop_gradient(_call(fn, x_in, training))

            def _backward(dy, variables=None):
                variables = list(variables or [])
                if surrogate is None:
                    known = (dy.shape.is_fully_defined()
                             and x_in.shape.is_fully_defined())
                    if known and dy.shape != x_in.shape:
                        raise ValueError(
                            "identity surrogate needs fn(x) with the shape "
                            f"of x; got {tuple(x_in.shape)} -> "
                            f"{tuple(dy.shape)}; pass a surrogate")
                    gx = tf.cast(tf.reshape(dy, tf.shape(x_in)), x_in.dtype)
                    return gx, [tf.zeros_like(v) for v in variables]
                with tf.GradientTape() as tape:
                    tape.watch(x_in)
                    s = surrogate(x_in)
                grads = tape.gradient(
                    s, [x_in] + variables, output_gradients=dy,
                    unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return grads[0], grads[1:]

            return y, _backward

        return _forward(x)

    def __repr__(self) -> str:
        return (f"BPDAFunction(wrapped={self.wrapped!r}, "
                f"surrogate={self.surrogate!r})")


def bpda(fn: Callable, surrogate: Callable | None = None) -> BPDAFunction:
    """Wraps `fn` for BPDA: exact forward, surrogate backward.

    Args:
        fn: callable `x -> tensor` (a function, Keras layer or model; a Keras
            one is called with `training`, default False). Typically a
            non-differentiable input transformation (rounding, thermometer
            encoding, JPEG-like quantization).
        surrogate: differentiable callable `x -> tensor` with the output
            shape of `fn`, approximating it (e.g.
            `ThermometerEncoding.soft_encode`); None means the identity
            (`fn(x) ~ x`, Athalye et al. 2018, Sec. 4.1).

    Returns:
        A `BPDAFunction` `g(x, training=False)` with `g(x) == fn(x)` bit for
        bit and `dg/dx` replaced by `d surrogate / dx` (identity if None);
        attributes `wrapped` and `surrogate`.

    Raises:
        ValueError: `fn` or `surrogate` not callable; at gradient time, an
            identity surrogate with `fn(x)` not shaped like `x`.

    Example:
        >>> enc = bpda(BitDepthReduction(bits=3))
        >>> x_adv = pgd(lambda x: classifier(enc(x), training=False), x, y,
        ...             eps=8 / 255, step_size=2 / 255, steps=20)
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable; got {fn!r}")
    if surrogate is not None and not callable(surrogate):
        raise ValueError(
            f"surrogate must be callable or None; got {surrogate!r}")
    return BPDAFunction(fn, surrogate)
