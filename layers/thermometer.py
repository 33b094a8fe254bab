"""Thermometer encoding of pixels (Buckman et al. 2018) with a BPDA surrogate."""

import keras
import numpy as np
from keras import ops

MODES = ("thermometer", "one_hot")
SURROGATES = ("none", "soft")


@keras.saving.register_keras_serializable(package="robust_recipes")
class ThermometerEncoding(keras.layers.Layer):
    """Quantizes each pixel into `levels` buckets and emits one bit per level.

    Inputs are first clipped to `[0, 1]`. With thresholds
    `t_i = float32(i / levels)` for `i = 0 .. levels - 1` (computed in
    float64, then cast):

    - `mode="thermometer"`: bit `i` is `1` iff `x >= t_i` (so bit 0 is
      always 1; a pixel exactly on a threshold `t_i` turns bit `i` on);
    - `mode="one_hot"`: bit `i` is `1` iff `t_i <= x < t_{i+1}` (with
      `t_levels = +inf`), i.e. the bucket index `floor(levels * x)` clipped
      to `levels - 1`, up to float32 rounding of the thresholds. It equals
      thermometer bit `i` minus thermometer bit `i + 1`.

    The levels of input channel `c` occupy the contiguous output channels
    `c * levels .. c * levels + levels - 1`.

    The encoding is piecewise constant, so its true input gradient is zero
    or undefined: the threat model is `differentiable = False`,
    `randomized = False`, and robust accuracy must be measured with BPDA
    (Athalye et al. 2018). For the BPDA attack model, `surrogate="soft"`
    keeps the forward pass bit-identical to the hard encoding while the
    gradient flows through the soft relaxation `soft_encode` (a
    straight-through estimator: `hard + soft - stop_gradient(soft)`).
    The soft thermometer bit is `clip(levels * x - i, 0, 1)`, the
    piecewise-linear ramp of Buckman et al.; soft one-hot bit `i` is soft
    bit `i` minus soft bit `i + 1`. The defended model itself should use
    `surrogate="none"`.

    Args:
        levels: int >= 2, number of quantization buckets per pixel.
        mode: one of `("thermometer", "one_hot")`.
        surrogate: one of `("none", "soft")`; `"soft"` gives straight-through
            gradients for BPDA, `"none"` the plain (zero-gradient) layer.
        **kwargs: forwarded to `keras.layers.Layer` (`name`, `dtype`, ...).

    Call arguments:
        inputs: float32 tensor `(batch, height, width, channels)`, pixels in
            `[0, 1]` (values outside are clipped).

    Returns:
        float32 tensor `(batch, height, width, channels * levels)` with
        values in `{0, 1}`.

    Raises:
        ValueError: if `levels` is not an int >= 2, or `mode` / `surrogate`
            is not one of the accepted values.

    Example:
        >>> x = keras.Input((32, 32, 3))
        >>> h = ThermometerEncoding(levels=16)(x)          # (None, 32, 32, 48)
        >>> h = keras.layers.Conv2D(16, 3)(h)

    References:
        Buckman, Roy, Raffel, Goodfellow 2018, "Thermometer Encoding: One
        Hot Way To Resist Adversarial Examples", ICLR (OpenReview
        S18Su--CW), Sec. 3 (quantization, one-hot and thermometer codes)
        and Sec. 4 (the continuous relaxation used by their LS-PGA attack).
        Athalye, Carlini, Wagner 2018, arXiv 1802.00420, Sec. 4.1 (BPDA)
        and Sec. 5.2.1 (breaking thermometer encoding).
    """

    differentiable = False
    randomized = False

    def __init__(
        self, levels=16, mode="thermometer", surrogate="none", **kwargs
    ):
        super().__init__(**kwargs)
        if (
            isinstance(levels, bool)
            or not isinstance(levels, int)
            or levels < 2
        ):
            raise ValueError(f"levels must be an int >= 2; got {levels!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if surrogate not in SURROGATES:
            raise ValueError(
                f"surrogate must be one of {SURROGATES}; got {surrogate!r}"
            )
        self.levels = levels
        self.mode = mode
        self.surrogate = surrogate

    def _thresholds(self):
        # float64 i / levels, then one rounding to float32 (documented t_i).
        return (np.arange(self.levels) / self.levels).astype("float32")

    def _to_channels(self, bits, inputs):
        # (..., C, levels) -> (..., C * levels): channel c's levels contiguous.
        shape = ops.shape(inputs)
        return ops.reshape(
            bits, (shape[0], shape[1], shape[2], shape[3] * self.levels)
        )

    def _next_bits(self, therm):
        # Thermometer bit i + 1 for every i, with a zero beyond the last.
        zeros = ops.zeros_like(therm[..., :1])
        return ops.concatenate([therm[..., 1:], zeros], axis=-1)

    def hard_encode(self, inputs):
        """The exact encoding (no surrogate gradient); see the class doc."""
        x = ops.clip(ops.cast(inputs, "float32"), 0.0, 1.0)[..., None]
        therm = ops.cast(ops.greater_equal(x, self._thresholds()), "float32")
        if self.mode == "one_hot":
            therm = therm - self._next_bits(therm)
        return self._to_channels(therm, inputs)

    def soft_encode(self, inputs):
        """Soft relaxation: thermometer bit `i` = `clip(levels*x - i, 0, 1)`.

        Same shape, dtype and channel layout as the hard encoding; values in
        `[0, 1]`; differentiable almost everywhere (Buckman et al. 2018,
        Sec. 4). In one-hot mode, soft bit `i` minus soft bit `i + 1`.
        """
        x = ops.clip(ops.cast(inputs, "float32"), 0.0, 1.0)[..., None]
        steps = np.arange(self.levels, dtype="float32")
        soft = ops.clip(self.levels * x - steps, 0.0, 1.0)
        if self.mode == "one_hot":
            soft = soft - self._next_bits(soft)
        return self._to_channels(soft, inputs)

    def call(self, inputs):
        hard = self.hard_encode(inputs)
        if self.surrogate == "none":
            return hard
        soft = self.soft_encode(inputs)
        # Straight-through: soft - stop_gradient(soft) is exactly 0 forward,
        # so the output is bit-identical to `hard`; gradient is d soft / dx.
        return hard + (soft - ops.stop_gradient(soft))

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        channels = None if channels is None else channels * self.levels
        return tuple(input_shape[:-1]) + (channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "levels": self.levels,
                "mode": self.mode,
                "surrogate": self.surrogate,
            }
        )
        return config
