"""Baseline JPEG compression round trip (Guo et al. 2018), in keras.ops."""

import math

import keras
import numpy as np
from keras import ops

# IJG / JPEG standard (ITU T.81 Annex K) tables, row-major (not zigzag).
LUMINANCE_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99]], "int64")
CHROMINANCE_TABLE = np.full((8, 8), 99, "int64")
CHROMINANCE_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66],
                             [24, 26, 56, 99], [47, 66, 99, 99]]
# Exact ties (e.g. a DC coefficient at k + 1/2, common in flat blocks) must
# round one way whatever the float error of the path (eager, compiled, TF,
# JAX): values within TIE_MARGIN below a tie round as the tie does.
TIE_MARGIN = 1e-3
# JFIF RGB -> YCbCr (rows: Y, Cb, Cr); the +128 chroma offset is separate.
RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114],
                         [-0.168736, -0.331264, 0.5],
                         [0.5, -0.418688, -0.081312]])


def quantization_table(base, quality: int) -> np.ndarray:
    """IJG's `jpeg_quality_scaling` + `jpeg_add_quant_table` (baseline).

    `scale = 5000 / quality` (integer division) below 50, else
    `200 - 2 * quality`; entries `(base * scale + 50) // 100` clipped to
    `[1, 255]` (baseline JPEG stores 8-bit entries; Pillow forces it).

    Returns:
        int64 array of `base`'s shape.
    """
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((np.asarray(base) * scale + 50) // 100, 1, 255)


def dct_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II matrix `D[u, x]` (float64), so that a
    block's JPEG coefficients are `D @ block @ D.T` (ITU T.81 A.3.3)."""
    u, x = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    d = np.cos((2 * x + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    d[0] = math.sqrt(1 / 8)
    return d


@keras.saving.register_keras_serializable(package="robust_recipes")
class JpegCompression(keras.layers.Layer):
    """Compresses and decompresses each image with baseline JPEG.

    The lossy part of a baseline (sequential DCT, IJG/libjpeg) JPEG round
    trip, written in `keras.ops` so that it traces into compiled attack
    loops on every backend:

    1. pixels are clipped to `[0, 1]` and rounded to levels `0..255`;
    2. with 3 channels, RGB -> YCbCr (JFIF), rounded to 8-bit samples as a
       JPEG file stores them; any other channel count codes every channel
       as its own grey plane (luminance table);
    3. level shift by -128; height and width padded to multiples of 8 by
       edge replication (as libjpeg pads partial blocks);
    4. orthonormal 8x8 DCT-II by matrix products, quantization with the IJG
       standard luminance / chrominance tables scaled by IJG's quality
       formula (`quantization_table`), rounding, dequantization, inverse
       DCT;
    5. +128, round, clip to `0..255` (with 3 channels: YCbCr -> RGB, round,
       clip), crop the padding, divide by 255.

    Entropy (Huffman) coding is lossless, so it is omitted. Roundings
    follow libjpeg at exact ties (quotients away from zero, levels up).
    Simplifications: no chroma subsampling (4:4:4; Pillow's default for
    RGB is 4:2:0), and a floating-point DCT where libjpeg's default is an
    integer one. Against Pillow / libjpeg (grey, or RGB with
    `subsampling=0`) pixels agree to well under a level on average, but
    a coefficient at a rounding boundary can round the other way and move
    its 8x8 block by a few levels (up to ~25 on sharp images at low
    quality): close, not bit-exact.

    Threat model: `differentiable = False` (rounding makes the gradient
    zero almost everywhere) and `randomized = False`; attack it with BPDA,
    the identity as backward surrogate (Athalye, Carlini & Wagner 2018,
    arXiv 1802.00420, Sec. 4.1, which breaks this defense that way).

    Args:
        quality: int in `[1, 100]`, the IJG quality; default 75, libjpeg's
            and Pillow's default.
        **kwargs: forwarded to `keras.layers.Layer` (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(batch, height, width, channels)` with static
            height, width and channels, pixels in `[0, 1]` (clipped).

    Returns:
        float32 tensor of the input's shape, values in
        `{k / 255 : k = 0 .. 255}`.

    Raises:
        ValueError: if `quality` is not an int in `[1, 100]`, or when built
            on an input that is not rank 4 with static height, width and
            channels.

    Example:
        >>> jpeg = JpegCompression(quality=75)
        >>> x_jpeg = jpeg(x)              # x: (batch, 28, 28, 1) in [0, 1]

    References:
        Guo, Rana, Cisse, van der Maaten 2018, "Countering Adversarial
        Images using Input Transformations", ICLR, arXiv 1711.00117,
        Sec. 3 (JPEG compression among the input transformations). Wallace
        1992, "The JPEG still picture compression
        standard"; ITU T.81 Annex K (tables); IJG libjpeg `jcparam.c`
        (quality scaling).
    """

    differentiable = False
    randomized = False

    def __init__(self, quality=75, **kwargs):
        super().__init__(**kwargs)
        if (isinstance(quality, bool) or not isinstance(quality, int)
                or not 1 <= quality <= 100):
            raise ValueError(
                f"quality must be an int in [1, 100]; got {quality!r}")
        self.quality = quality

    def build(self, input_shape):
        if len(input_shape) != 4 or any(d is None for d in input_shape[1:]):
            raise ValueError(
                "JpegCompression expects (batch, height, width, channels) "
                f"with static height, width, channels; got "
                f"{tuple(input_shape)}")

    def call(self, inputs):
        height, width, channels = inputs.shape[1:]
        x = _round_clip(ops.cast(inputs, "float32") * 255.0)
        colour = channels == 3
        if colour:
            x = _round_clip(_rgb_to_ycbcr(x))
        x = pad_edge(x - 128.0, 8)
        if colour:
            tables = [LUMINANCE_TABLE, CHROMINANCE_TABLE, CHROMINANCE_TABLE]
        else:
            tables = [LUMINANCE_TABLE] * channels
        q = np.stack([quantization_table(t, self.quality) for t in tables],
                     axis=-1).reshape(1, 1, 8, 1, 8, channels)
        x = _dct_round_trip(x, ops.convert_to_tensor(q, "float32"))
        x = _round_clip(x + 128.0)
        if colour:
            x = _round_clip(_ycbcr_to_rgb(x))
        return x[:, :height, :width, :] / 255.0

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"quality": self.quality})
        return config


def _round_clip(x):
    """Rounds to levels, ties up (libjpeg's descaling), then clips."""
    return ops.clip(ops.floor(x + 0.5 + TIE_MARGIN), 0.0, 255.0)


def _rgb_to_ycbcr(x):
    m = ops.convert_to_tensor(RGB_TO_YCBCR, "float32")
    offset = ops.convert_to_tensor([0.0, 128.0, 128.0], "float32")
    return ops.einsum("bhwc,kc->bhwk", x, m) + offset


def _ycbcr_to_rgb(x):
    inverse = ops.convert_to_tensor(np.linalg.inv(RGB_TO_YCBCR), "float32")
    offset = ops.convert_to_tensor([0.0, 128.0, 128.0], "float32")
    return ops.einsum("bhwk,ck->bhwc", x - offset, inverse)


def pad_edge(x, multiple):
    """Pads height and width up to multiples of `multiple` by repeating the
    last row / column (a gather with clipped indices: static shapes, every
    backend)."""
    for axis in (1, 2):
        size = x.shape[axis]
        padded = -(-size // multiple) * multiple
        if padded != size:
            index = np.minimum(np.arange(padded), size - 1).astype("int32")
            x = ops.take(x, index, axis=axis)
    return x


def _dct_round_trip(x, q):
    """`(batch, H, W, C)` level-shifted samples, H and W multiples of 8 ->
    the same after blockwise DCT, quantization by `q` `(1, 1, 8, 1, 8, C)`,
    rounding, dequantization and inverse DCT (float32, unrounded)."""
    height, width, channels = x.shape[1:]
    d = ops.convert_to_tensor(dct_matrix(), "float32")
    blocks = ops.reshape(x, (-1, height // 8, 8, width // 8, 8, channels))
    coef = ops.einsum("uy,bpyqxc->bpuqxc", d, blocks)
    coef = ops.einsum("vx,bpuqxc->bpuqvc", d, coef)
    coef = coef / q  # libjpeg: ties away from zero (jcdctmgr.c)
    coef = ops.sign(coef) * ops.floor(ops.abs(coef) + 0.5 + TIE_MARGIN) * q
    out = ops.einsum("uy,bpuqvc->bpyqvc", d, coef)
    out = ops.einsum("vx,bpyqvc->bpyqxc", d, out)
    return ops.reshape(out, (-1, height, width, channels))
