"""Feature-squeezing input transforms (Xu, Evans, Qi 2018)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="robust_recipes")
class BitDepthReduction(keras.layers.Layer):
    """Reduces the colour depth of each pixel to `bits` bits.

    `x -> round(x * (2**bits - 1)) / (2**bits - 1)`, elementwise, on inputs
    clipped to `[0, 1]`. `round` is `keras.ops.round`, which rounds halves
    to even (as `numpy.round`); exact halves are measure-zero for real
    images. `bits=8` is (nearly) the identity on 8-bit images.

    Threat model: `differentiable = False` (the output is piecewise
    constant, so the true gradient is zero almost everywhere) and
    `randomized = False`; attack it with BPDA, using the identity as the
    backward surrogate (Athalye et al. 2018, Sec. 4.1).

    Args:
        bits: int in `[1, 8]`, the output bit depth per channel.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: float32 tensor `(batch, height, width, channels)`, pixels in
            `[0, 1]`.

    Returns:
        float32 tensor of the input's shape, values in
        `{k / (2**bits - 1) : k = 0 .. 2**bits - 1}`.

    Raises:
        ValueError: if `bits` is not an int in `[1, 8]`.

    Example:
        >>> squeeze = BitDepthReduction(bits=1)      # MNIST setting
        >>> x_sq = squeeze(x)                        # x in [0, 1]

    References:
        Xu, Evans, Qi 2018, "Feature Squeezing: Detecting Adversarial
        Examples in Deep Neural Networks", NDSS (arXiv 1704.01155),
        Sec. 4.1 (colour-depth reduction).
    """

    differentiable = False
    randomized = False

    def __init__(self, bits=1, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(bits, bool)
            or not isinstance(bits, int)
            or not (1 <= bits <= 8)
        ):
            raise ValueError(f"bits must be an int in [1, 8]; got {bits!r}")
        self.bits = bits

    def call(self, inputs):
        scale = float(2**self.bits - 1)
        x = ops.clip(ops.cast(inputs, "float32"), 0.0, 1.0)
        return ops.round(x * scale) / scale

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"bits": self.bits})
        return config


def _window(size):
    """Validates `size` and returns it as a `(height, width)` tuple."""
    pair = (size, size) if isinstance(size, int) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in pair
        )
    ):
        raise ValueError(
            "size must be an odd int >= 1 or a (height, width) pair of "
            f"ints >= 1; got {size!r}"
        )
    if isinstance(size, int) and size % 2 == 0:
        raise ValueError(
            f"an int size must be odd (use (h, w) for even windows); "
            f"got {size!r}"
        )
    return tuple(pair)


@keras.saving.register_keras_serializable(package="robust_recipes")
class MedianSmoothing2D(keras.layers.Layer):
    """Per-channel median filter over a sliding `(height, width)` window.

    Each output pixel is the median of the window around it, channel by
    channel; the output keeps the input's shape (stride 1). Borders are
    padded in "reflect" mode in the numpy / `keras.ops.pad` sense, which
    mirrors about the edge pixel without repeating it
    (`d c b | a b c d | c b a`); that is `scipy.ndimage.median_filter`'s
    `mode="mirror"` (scipy's own `"reflect"` repeats the edge). Each side's
    padding must be smaller than the image side.

    Window placement and even sizes follow `scipy.ndimage.median_filter`
    with `origin=0`: along an axis of window length `k`, the window covers
    offsets `-(k // 2) .. k - 1 - k // 2`, and the value taken is the
    element of rank `(h * w) // 2` (0-based) of the sorted window. For odd
    windows this is the true median, centred; for even windows (the
    paper's 2x2) it is the upper median, with the window extending one
    more pixel up / left.

    Threat model: `differentiable = True` (chosen: the median is piecewise
    linear in the input, selecting one input element, so gradients flow to
    the selected pixel and the layer can be attacked directly with
    gradients, as Xu et al. and Athalye et al. treat it) and
    `randomized = False`.

    Args:
        size: odd int >= 1 for a square window, or a `(height, width)` pair
            of ints >= 1 (even allowed, see above).
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: float32 tensor `(batch, height, width, channels)`, pixels in
            `[0, 1]`, with statically known `channels`.

    Returns:
        float32 tensor `(batch, height, width, channels)`, values in the
        input's range.

    Raises:
        ValueError: if `size` is not an odd int >= 1 or a pair of
            ints >= 1.

    Example:
        >>> smooth = MedianSmoothing2D(size=(2, 2))     # CIFAR-10 setting
        >>> x_sm = smooth(x)                            # same shape as x

    References:
        Xu, Evans, Qi 2018, "Feature Squeezing: Detecting Adversarial
        Examples in Deep Neural Networks", NDSS (arXiv 1704.01155),
        Sec. 4.2 (local smoothing with a median filter).
    """

    differentiable = True
    randomized = False

    def __init__(self, size=3, **kwargs):
        super().__init__(**kwargs)
        self._window = _window(size)
        self.size = size if isinstance(size, int) else self._window

    def call(self, inputs):
        kh, kw = self._window
        x = ops.cast(inputs, "float32")
        # scipy origin=0: k // 2 before, the rest after.
        pads = [
            [0, 0],
            [kh // 2, kh - 1 - kh // 2],
            [kw // 2, kw - 1 - kw // 2],
            [0, 0],
        ]
        x = ops.pad(x, pads, mode="reflect")
        patches = window_stack(x, kh, kw)
        rank = (kh * kw) // 2
        return ops.sort(patches, axis=-2)[..., rank, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size})
        return config


def window_stack(x, kh: int, kw: int):
    """All `kh x kw` windows of an already padded `x`, stacked.

    Args:
        x: `(batch, height + kh - 1, width + kw - 1, channels)`.

    Returns:
        `(batch, height, width, kh * kw, channels)`: window position
        `k = kw * dy + dx` (row-major), channels last. Built from shifted
        slices, O(kh * kw * H * W * C): `keras.ops.image.extract_patches`
        is a convolution with an identity kernel, O(C^2), ruinous for the
        2048-channel feature maps of the denoising blocks.
    """
    h = ops.shape(x)[1] - kh + 1
    w = ops.shape(x)[2] - kw + 1
    return ops.stack([x[:, dy:dy + h, dx:dx + w, :]
                      for dy in range(kh) for dx in range(kw)], axis=3)
