"""LS-PGA, the white-box attack on thermometer-encoded networks.

Buckman, Roy, Raffel, Goodfellow 2018, "Thermometer Encoding: One Hot Way To
Resist Adversarial Examples", ICLR (OpenReview S18Su--CW; no arXiv id). The
network sees each pixel as a `levels`-bit thermometer code (its first input
defense is a `ThermometerEncoding`), which has no useful input gradient.
Logit-Space Projected Gradient Ascent (LS-PGA, Sec. 4, Alg. 3) works in a
relaxation of the code instead:

1. per pixel and channel, the buckets reachable within eps
   (`[bucket(x - eps), bucket(x + eps)]`, clipped to [0, 1]) form the
   projection set; one logit `u` per bucket is drawn from N(0, 1)
   (`rand_init`) or set to 0;
2. the relaxed code is `softmax(u / T)` over the reachable buckets (masked
   ones get probability 0), turned into thermometer bits by a reverse
   cumulative sum (bit i = P(bucket >= i)); the body of the network (the
   layers after the encoding) maps it to logits;
3. `steps` times: `u += logit_step * sign(grad_u CE)`, then `T /= anneal`;
4. the final code is the hard code of `argmax u` over the reachable buckets.

The hard code is returned as a pixel image: the point of each chosen bucket
nearest to `x`, which is within eps of `x` and whose encoding is exactly
that code, so the attack obeys the uniform `attack(model, x, y) -> x_adv`
contract of `attacks/` (registered as "ls_pga"; `training.thermometer_at`
trains on it). The model may also be the straight-through copy made by
`attacks.with_straight_through` (its encoding layer is still a
`ThermometerEncoding`), which is how evaluate.py runs `--attack=ls_pga`.

Settings of the reference TF code (Athalye et al.'s re-implementation in
anishathalye/obfuscated-gradients, thermometer/discretization_attacks.py
`adv_lspga` and thermometer/train.py): 16 levels, 7 steps, eps 0.031,
initial inverse temperature 1 multiplied by 1.2 per step.
"""

from __future__ import annotations

import weakref
from typing import Any

import keras
import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from core import backends
from layers.thermometer import ThermometerEncoding

LS_PGA_ARGS = ("eps", "steps", "logit_step", "anneal", "temperature",
               "rand_init", "seed")
_MASKED = -1e9  # logit of an unreachable bucket (softmax weight exactly 0)
_SPLITS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def split_thermometer(net: keras.Model
                      ) -> tuple[ThermometerEncoding, keras.Model]:
    """`(encoder, body)` of a thermometer-encoded network.

    `net` must be a Functional (or Sequential) `keras.Model` whose first
    layer after its single input is a `ThermometerEncoding` (the first of
    its `input_defenses`); `body = keras.Model(encoder.output, net.output)`
    shares every weight with `net` and maps a code `(batch, height, width,
    channels * levels)` to logits. Results are cached per `net`.

    Raises:
        ValueError: `net` is not such a model (the message names what it
            found), or its output depends on the raw input other than
            through the encoding.
    """
    if net in _SPLITS:
        return _SPLITS[net]
    inner = [layer for layer in getattr(net, "layers", [])
             if not isinstance(layer, keras.layers.InputLayer)]
    first = type(inner[0]).__name__ if inner else None
    if not (inner and isinstance(inner[0], ThermometerEncoding)
            and len(net.inputs) == 1 and inner[0].input is net.inputs[0]):
        raise ValueError(
            "LS-PGA needs a Functional model whose first layer after its "
            "input is a ThermometerEncoding (model kwargs input_defenses="
            "[{'class_name': 'ThermometerEncoding', ...}]); got "
            f"{type(net).__name__} with first layer {first!r}")
    try:
        body = keras.Model(inner[0].output, net.outputs[0],
                           name=f"{net.name}_body")
    except ValueError as e:
        raise ValueError(f"{net.name}'s output must depend on its input "
                         f"only through the ThermometerEncoding: {e}") from e
    _SPLITS[net] = (inner[0], body)
    return _SPLITS[net]


def _thresholds(levels: int) -> np.ndarray:
    # ThermometerEncoding's t_i = float32(i / levels): bit i is x >= t_i.
    return (np.arange(levels) / levels).astype("float32")


def _bucket(v: Any, levels: int) -> Any:
    bits = ops.cast(v[..., None] >= _thresholds(levels), "int32")
    return ops.sum(bits, -1) - 1


def reachable_mask(x: Any, eps: float, levels: int) -> Any:
    """bool `(batch, height, width, channels, levels)`: bucket b of a pixel
    is True iff some value within eps of it (in [0, 1]) falls in b, i.e.
    `bucket(max(x - eps, 0)) <= b <= bucket(min(x + eps, 1))` with the
    encoding's own float32 thresholds. `x` float32 in [0, 1]."""
    x = ops.clip(ops.cast(x, "float32"), 0.0, 1.0)
    lo = _bucket(ops.maximum(x - eps, 0.0), levels)[..., None]
    hi = _bucket(ops.minimum(x + eps, 1.0), levels)[..., None]
    b = ops.arange(levels, dtype="int32")
    return ops.logical_and(b >= lo, b <= hi)


def _to_channels(t: Any) -> Any:
    # (B, H, W, C, L) -> (B, H, W, C * L), channel c's levels contiguous (the
    # layer's layout); static sizes are kept for the body's input check.
    h, w, c, levels = t.shape[1:]
    if None in (h, w, c, levels):
        s = ops.shape(t)
        return ops.reshape(t, (s[0], s[1], s[2], s[3] * s[4]))
    return ops.reshape(t, (-1, h, w, c * levels))


def _bits(one_hot: Any, mode: str) -> Any:
    # Thermometer bit i = sum_{j >= i} one_hot_j, i.e. bucket >= i.
    if mode == "one_hot":
        return one_hot
    return ops.flip(ops.cumsum(ops.flip(one_hot, -1), axis=-1), -1)


def relaxed_encoding(logits: Any, mask: Any,
                     temperature: Any,
                     mode: str = "thermometer") -> Any:
    """LS-PGA's relaxed code (Buckman et al. 2018, Alg. 3).

    Args:
        logits: float32 `(batch, height, width, channels, levels)`.
        mask: bool, same shape (`reachable_mask`); each pixel needs one True.
        temperature: > 0; as it goes to 0 the code tends to the hard code of
            `argmax` over the unmasked buckets.
        mode: the encoding's mode, "thermometer" or "one_hot".

    Returns:
        float32 `(batch, height, width, channels * levels)` in [0, 1]: the
        expected bits under `softmax(logits / temperature)` restricted to
        the mask.
    """
    z = ops.where(mask, logits / temperature, _MASKED)
    return _to_channels(_bits(ops.softmax(z, axis=-1), mode))


def hard_code(buckets: Any, levels: int,
              mode: str = "thermometer") -> Any:
    """float32 `(batch, height, width, channels * levels)` in {0, 1}: the
    code of int bucket indices `(batch, height, width, channels)`."""
    return _to_channels(_bits(ops.one_hot(buckets, levels), mode))


def pixels_in_buckets(x: Any, buckets: Any,
                      levels: int) -> Any:
    """Per pixel, the point of bucket `buckets` (int `(batch, height, width,
    channels)`) nearest to `x` (float32, same shape, in [0, 1]):
    `clip(x, t_b, largest float32 below t_{b+1})` (1 for the top bucket).
    Its `ThermometerEncoding` is exactly `hard_code(buckets)`; it is within
    eps of `x` (up to float32 rounding) when the bucket is in
    `reachable_mask(x, eps)`."""
    t = _thresholds(levels)
    top = np.append(np.nextafter(t[1:], np.float32(-np.inf)), np.float32(1))
    x = ops.clip(ops.cast(x, "float32"), 0.0, 1.0)
    lo, hi = ops.take(t, buckets), ops.take(top, buckets)
    return ops.minimum(ops.maximum(x, lo), hi)


def _ls_pga_loop(body, y, mask, logits, steps, logit_step, anneal,
                 temperature, *, mode):
    """`steps` signed ascent steps on the bucket logits (one
    `keras.ops.fori_loop`), the temperature divided by `anneal` after
    each; returns the final logits."""

    def step(_, carry):
        logits, temperature = carry

        def objective(u):
            code = relaxed_encoding(u, mask, temperature, mode)
            return ops.sum(primitives.per_example_loss(
                primitives.call_model(body, code), y, "ce")), None

        _, _, grad = backends.value_and_grad(objective, logits)
        return logits + logit_step * ops.sign(grad), temperature / anneal

    logits, _ = backends.fori_loop(body, 0, steps, step, (logits, temperature))
    return logits


_LOOP = backends.compile_fn(_ls_pga_loop, static_argnames=("mode",))


def check_args(eps: float, steps: int, logit_step: float = 1.0,
               anneal: float = 1.2, temperature: float = 1.0) -> None:
    """Checks the scalar arguments of `ls_pga`.

    Raises:
        ValueError: naming the bad value and the accepted range.
    """
    primitives.validate(eps=eps, steps=steps)
    for name, value, low in (("logit_step", logit_step, 0.0),
                             ("temperature", temperature, 0.0)):
        if not (np.isfinite(value) and value > low):
            raise ValueError(f"{name} must be a finite number > 0; got "
                             f"{value!r}")
    if not (np.isfinite(anneal) and anneal >= 1.0):
        raise ValueError(f"anneal must be a finite number >= 1 (the "
                         f"temperature is divided by it each step); got "
                         f"{anneal!r}")


def ls_pga_buckets(model: keras.Model, x: Any, y: Any | None,
                   *, eps: float, steps: int, logit_step: float = 1.0,
                   anneal: float = 1.2, temperature: float = 1.0,
                   rand_init: bool = True, seed: int | None = None
                   ) -> Any:
    """LS-PGA's discretised result as bucket indices, int32 `(batch, height,
    width, channels)`, each in `reachable_mask(x, eps)`; arguments, errors
    and reference as `ls_pga`."""
    check_args(eps, steps, logit_step, anneal, temperature)
    encoder, body = split_thermometer(model)
    primitives.check_inputs(x, y, 0.0, 1.0)
    x = ops.cast(x, "float32")
    y = (primitives.default_labels(model, x) if y is None
         else ops.cast(y, "int32"))
    mask = reachable_mask(x, eps, encoder.levels)
    shape = tuple(mask.shape)
    pair = primitives.seed_pair(seed, 0)
    if not rand_init:
        logits = ops.zeros(shape)
    else:
        logits = primitives.normal(shape, pair)
    logits = _LOOP(body, y, mask, logits,
                   ops.convert_to_tensor(int(steps), "int32"),
                   primitives.as_scalar(logit_step),
                   primitives.as_scalar(anneal),
                   primitives.as_scalar(temperature), mode=encoder.mode)
    return ops.cast(ops.argmax(ops.where(mask, logits, -np.inf), axis=-1),
                    "int32")


@register_attack("ls_pga")
def ls_pga(model: keras.Model, x: Any, y: Any | None, *,
           eps: float, steps: int, logit_step: float = 1.0,
           anneal: float = 1.2, temperature: float = 1.0,
           rand_init: bool = True, seed: int | None = None) -> Any:
    """LS-PGA (Buckman et al. 2018, Alg. 3), L-inf, returned in pixels.

    Args:
        model: a thermometer-encoded network (see `split_thermometer`); the
            attack differentiates its body, called with `training=False`.
        x: float32 `(batch, height, width, channels)` in [0, 1].
        y: int `(batch,)` true labels, or None for the model's predictions.
        eps: L-inf budget on the [0, 1] scale, >= 0.
        steps: ascent steps, >= 1 (7 in the reference training code).
        logit_step: size of the signed ascent step on the bucket logits,
            > 0 (logit units, not pixels).
        anneal: >= 1, the softmax temperature is divided by it after every
            step (1.2 in the reference code).
        temperature: initial softmax temperature, > 0 (1 there).
        rand_init: start from N(0, 1) bucket logits, else from zeros.
        seed: int for a reproducible start; None uses the global generator.

    Returns:
        `x_adv` float32, the shape of `x`, in [0, 1], `|x_adv - x| <= eps`
        (up to float32 rounding), whose thermometer code is the discretised
        LS-PGA code (see `pixels_in_buckets`).

    Raises:
        ValueError: bad `eps`, `steps`, `logit_step`, `anneal` or
            `temperature`, `x` outside [0, 1] or not rank 4, or a `model`
            without a leading `ThermometerEncoding`.
    """
    buckets = ls_pga_buckets(
        model, x, y, eps=eps, steps=steps, logit_step=logit_step,
        anneal=anneal, temperature=temperature, rand_init=rand_init,
        seed=seed)
    levels = split_thermometer(model)[0].levels
    x_adv = pixels_in_buckets(x, buckets, levels)
    return ops.cast(x_adv, ops.convert_to_tensor(x).dtype)
