"""Backward Pass Differentiable Approximation (BPDA).

`bpda(fn, surrogate)` returns a callable whose forward value is exactly
`fn(x)` and whose backward pass is the vector-Jacobian product of
`surrogate` at `x` (the identity when `surrogate` is None, which requires
`fn(x)` to have the shape of `x`, as for input purifiers such as
BitDepthReduction). Implemented with `keras.ops` only, as
`stop_gradient(f) + (s - stop_gradient(s))` with `f = fn(x)` and `s =
surrogate(x)` (`s = x` for the identity): the added term is exactly 0 in
the forward pass, so the value is bit-identical to `fn(x)` (no
`s + stop_gradient(f - s)` rounding), and its gradient is that of `s`.

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

For a whole saved defended model, `with_straight_through(model)` returns
the attack model in one call: a clone whose non-differentiable layers keep
their exact forward pass and get straight-through gradients
(`surrogate="soft"` where the layer has that option, the identity
otherwise), e.g. `pgd(with_straight_through(net), x, y, ...)`.

References:
    Athalye, Carlini, Wagner 2018, "Obfuscated Gradients Give a False Sense
    of Security", ICML, arXiv 1802.00420, Sec. 4.1 (BPDA; identity
    surrogate for g(x) ~ x).
"""

from __future__ import annotations

from typing import Any, Callable

import keras
from keras import ops

from core.keras_internals import FUNCTIONAL_MODEL_TYPES


def _call(fn: Callable, x: Any, training: bool) -> Any:
    if isinstance(fn, keras.layers.Layer):
        return fn(x, training=training)
    return fn(x)


def _identity_surrogate(x: Any, y: Any) -> Any:
    """`x` as the surrogate of `y = fn(x)`: cast to `y`'s dtype and given
    `y`'s shape (so `dy` flows back to `x` reshaped).

    Raises:
        ValueError: the static shapes of `x` and `y` are known and differ.
    """
    known = None not in tuple(x.shape) and None not in tuple(y.shape)
    if known and tuple(y.shape) != tuple(x.shape):
        raise ValueError(
            "identity surrogate needs fn(x) with the shape of x; got "
            f"{tuple(x.shape)} -> {tuple(y.shape)}; pass a surrogate")
    s = ops.cast(x, y.dtype)
    return s if known else ops.reshape(s, ops.shape(y))


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

    def __call__(self, x, training: bool = False) -> Any:
        x = ops.convert_to_tensor(x)
        y = ops.stop_gradient(_call(self.wrapped, x, training))
        if self.surrogate is None:
            s = _identity_surrogate(x, y)
        else:
            s = ops.cast(self.surrogate(x), y.dtype)
        # Exactly y + 0 forward; d/dx is the surrogate's VJP.
        return y + (s - ops.stop_gradient(s))

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
        ValueError: `fn` or `surrogate` not callable; when `g` is called,
            an identity surrogate with `fn(x)` not shaped like `x` (static
            shapes).

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


@keras.saving.register_keras_serializable(package="robust_recipes")
class IdentityStraightThrough(keras.layers.Layer):
    """Forward pass of `layer`, identity backward pass (BPDA with
    `g(x) ~ x`, Athalye et al. 2018, Sec. 4.1): `layer(x) + (x - sg(x))`.

    `with_straight_through` wraps with it the non-differentiable layers that
    have no `surrogate` option and keep their input's shape (e.g.
    `BitDepthReduction`). The wrapped layer is shared, not copied.

    Args:
        layer: a Keras layer whose output has its input's shape.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `(batch, height, width, channels)`.

    Returns:
        `layer(inputs)`, same shape and dtype, equal to it (`+ 0` exactly);
        the gradient with respect to `inputs` is the incoming gradient.

    Raises:
        ValueError: if `layer`'s output shape differs from its input's.
    """

    def __init__(self, layer, **kwargs):
        kwargs.setdefault("name", f"{layer.name}_straight_through")
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs):
        outputs = self.layer(inputs)
        if tuple(outputs.shape) != tuple(inputs.shape):
            raise ValueError(
                f"identity straight-through needs a shape-preserving layer; "
                f"{self.layer.name!r} maps {tuple(inputs.shape)} to "
                f"{tuple(outputs.shape)}; give it a surrogate (bpda())")
        x = keras.ops.cast(inputs, outputs.dtype)
        return outputs + (x - keras.ops.stop_gradient(x))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(),
                "layer": keras.saving.serialize_keras_object(self.layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(
            config["layer"])
        return cls(**config)


def with_straight_through(model: keras.Model) -> keras.Model:
    """The BPDA attack model of a defended network, in one call.

    Returns a clone of the Functional or Sequential `model` (nested ones
    included) in which every layer whose config has a `surrogate` field
    (`layers.ThermometerEncoding`) is rebuilt with `surrogate="soft"` (hard
    forward pass, gradient of the soft relaxation), every other layer with
    the class attribute `differentiable = False` (`layers.BitDepthReduction`)
    is wrapped in `IdentityStraightThrough`, and all remaining layers are the
    original instances, so weights are shared (a rebuilt surrogate layer
    that has weights gets copies of them). The clone's outputs equal the
    original's bit for bit; its input gradient is the BPDA gradient, finite
    and non-zero where the original's is zero or None. Randomized layers are
    kept as they are: combine with `attacks.eot.eot` for those.

    Args:
        model: a Functional or Sequential `keras.Model` from float32 images
            `(batch, height, width, channels)` in `[0, 1]` to logits
            `(batch, classes)`.

    Returns:
        A `keras.Model` with the same inputs, outputs and weights, to pass
        to any attack: `pgd(with_straight_through(net), x, y, eps=...)`.
        Evaluate the attack's `x_adv` on `model` itself.

    Raises:
        ValueError: `model` is not a Functional or Sequential Keras model
            (subclassed models cannot be cloned), or a non-differentiable
            layer without a surrogate changes its input's shape.

    Example:
        >>> net = keras.saving.load_model("therm.keras")   # ThermometerEncoding
        >>> x_adv = pgd(with_straight_through(net), x, y, eps=0.1,
        ...             step_size=0.01, steps=20)
        >>> robust_acc = np.mean(np.argmax(net(x_adv), -1) == y)

    References:
        Athalye, Carlini, Wagner 2018, arXiv 1802.00420, Sec. 4.1 (BPDA) and
        Sec. 5.2.1 (thermometer encoding broken with it).
    """
    if not isinstance(model, FUNCTIONAL_MODEL_TYPES):
        raise ValueError(
            "with_straight_through needs a Functional or Sequential "
            f"keras.Model; got {type(model).__name__}")
    copied = []

    def clone(layer):
        config = layer.get_config()
        if "surrogate" in config:
            new = type(layer).from_config({**config, "surrogate": "soft"})
            if layer.weights:
                copied.append((layer, new))
            return new
        if getattr(layer, "differentiable", True) is False:
            return IdentityStraightThrough(layer)
        return layer

    clone_model = keras.models.clone_model(model, clone_function=clone,
                                           recursive=True)
    for old, new in copied:
        new.set_weights(old.get_weights())
    return clone_model
