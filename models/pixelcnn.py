"""A small PixelCNN with a 256-way softmax (van den Oord et al. 2016).

van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural
Networks", arXiv 1601.06759, Sec. 3.4-3.5 and Fig. 2/4: a stack of masked
convolutions, mask A on the first (the centre pixel is hidden from itself),
mask B afterwards (the centre is visible, since its features only hold the
pixels before it), residual connections, two ReLU + 1x1 convolutions, and a
discrete softmax over the pixel's intensity levels (Sec. 5.2: the 256-way
softmax). The model estimates

    p(x) = prod_{i, j in raster order} p(x_ij | x_<ij)

and is the density model that PixelDefend (Song et al. 2018, arXiv
1710.10766, Sec. 4; `layers/pixel_defend.py`) purifies images with.

Song et al. use a PixelCNN++ (Salimans et al. 2017, arXiv 1701.05517) with
its mixture-of-logistics output replaced by a softmax (their Sec. 4 / the
`train_pxpp_softmax.py` of their code). We use the small plain PixelCNN
here, with the same softmax output, so that it trains in minutes on a 2-core
CPU; its bits/dim is accordingly worse than theirs. Plain masked
convolutions have the "blind spot" of van den Oord et al. 2016b (arXiv
1606.05328, Sec. 2.2): the receptive field misses some pixels above and to
the right. The model is still exactly autoregressive.

Grayscale only: the within-pixel channel masks of a colour PixelCNN (R, then
G given R, then B given R, G) are not implemented, and `C > 1` raises.

Layer names: "rescale", "conv_a", "res{k}_relu", "res{k}_conv_b", "res{k}_add"
(k = 1 .. num_layers - 1), "head_relu1", "head_conv", "head_relu2",
"logits".
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from models._common import check_positive_int

MASK_TYPES = ("A", "B")


def causal_mask(kernel_size: tuple[int, int], mask_type: str) -> np.ndarray:
    """The spatial mask of a masked convolution, `(kh, kw)` float32.

    1 on the kernel taps that see pixels strictly before the centre in
    raster order (the rows above; the centre row left of the centre); the
    centre tap itself is 1 for mask "B" and 0 for mask "A".

    Raises:
        ValueError: if `mask_type` is not "A" or "B", or a kernel side is
            even (the centre must be a tap).
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(
            f"mask_type must be one of {MASK_TYPES}; got {mask_type!r}")
    kh, kw = kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd in both dimensions; got {kernel_size!r}")
    mask = np.zeros((kh, kw), dtype="float32")
    mask[: kh // 2, :] = 1.0
    mask[kh // 2, : kw // 2] = 1.0
    if mask_type == "B":
        mask[kh // 2, kw // 2] = 1.0
    return mask


@keras.saving.register_keras_serializable(package="robust_recipes")
class MaskedConv2D(keras.layers.Conv2D):
    """`Conv2D` whose kernel is multiplied by a causal mask at every call.

    The masked taps keep their (unused) weights, so the mask is exact for any
    weight values; their gradients are zero. Stride 1, dilation 1 and
    `padding="same"` are fixed, so the output keeps the spatial size and
    output pixel `(i, j)` depends only on input pixels before `(i, j)` in
    raster order (mask "A") or at or before it (mask "B"). The mask is
    spatial only, as for one input channel of van den Oord et al.; with
    several channels every input channel of a pixel is treated alike.

    Args:
        filters: int >= 1, output channels.
        kernel_size: odd int or a pair of odd ints.
        mask_type: "A" (first layer: the centre tap is hidden) or "B".
        **kwargs: forwarded to `keras.layers.Conv2D` (e.g. `use_bias`,
            `kernel_initializer`, `name`); `padding` must be "same" and
            `strides` / `dilation_rate` 1 if given.

    Call arguments:
        inputs: float32 `(batch, height, width, channels)`.

    Returns:
        float32 `(batch, height, width, filters)`.

    Raises:
        ValueError: for a `mask_type` other than "A" / "B", an even kernel
            side, or a padding / stride / dilation other than the above.

    References:
        van den Oord, Kalchbrenner & Kavukcuoglu 2016, arXiv 1601.06759,
        Sec. 3.4 (masked convolution) and Fig. 2 (right).
    """

    def __init__(self, filters, kernel_size, mask_type="B", **kwargs):
        for key, fixed in (("padding", "same"), ("strides", 1),
                           ("dilation_rate", 1)):
            value = kwargs.pop(key, fixed)
            if value not in (fixed, (fixed, fixed), [fixed, fixed]):
                raise ValueError(
                    f"MaskedConv2D needs {key}={fixed!r}; got {value!r}")
        super().__init__(filters, kernel_size, padding="same", **kwargs)
        self.mask_type = mask_type
        self._mask = causal_mask(self.kernel_size, mask_type)

    def convolution_op(self, inputs, kernel):
        mask = ops.convert_to_tensor(self._mask[:, :, None, None],
                                     dtype=kernel.dtype)
        return super().convolution_op(inputs, kernel * mask)

    def get_config(self):
        config = super().get_config()
        config.update({"mask_type": self.mask_type})
        for key in ("padding", "strides", "dilation_rate"):
            config.pop(key, None)
        return config


def _check_odd(value, what: str) -> int:
    if (isinstance(value, bool) or not isinstance(value, int) or value < 1
            or value % 2 == 0):
        raise ValueError(f"{what} must be an odd positive int; got {value!r}")
    return value


def pixelcnn(
    image_shape: tuple[int, int, int] = (28, 28, 1),
    filters: int = 32,
    num_layers: int = 5,
    levels: int = 256,
    kernel_size: int = 3,
    first_kernel_size: int = 7,
) -> keras.Model:
    """Builds a small grayscale PixelCNN with a `levels`-way softmax output.

    Architecture (van den Oord et al. 2016, arXiv 1601.06759, Sec. 3.4-3.5,
    with their single-conv residual block shrunk to one masked conv):
    `x -> 2x - 1` ("rescale"); masked conv A `first_kernel_size`, `filters`
    ("conv_a"); `num_layers - 1` residual blocks `h + MaskedConvB(ReLU(h))`
    of size `kernel_size`; ReLU, 1x1 conv `filters`, ReLU, 1x1 conv `levels`
    ("logits", no softmax).

    Args:
        image_shape: `(height, width, channels)` with `channels == 1`.
        filters: int >= 1, feature maps of every hidden layer.
        num_layers: int >= 1, masked convolutions in all (the first is
            mask A, the other `num_layers - 1` mask B, each in a residual
            block).
        levels: int >= 2, intensity levels of the softmax; level `k` is the
            pixel value `k / (levels - 1)` on the [0, 1] scale (256 for
            8-bit images, the paper's setting).
        kernel_size: odd int >= 1, kernel of the mask-B convolutions.
        first_kernel_size: odd int >= 1, kernel of the mask-A convolution
            (7 in van den Oord et al.).

    Returns:
        A Functional `keras.Model` mapping float32 images `(batch, height,
        width, 1)` in [0, 1] to float32 logits `(batch, height, width,
        levels)`: the channel axis is dropped since there is one channel.
        `softmax(logits[:, i, j])` is `p(x_ij | x_<ij)` over the levels;
        it does not depend on the input at `(i, j)` or after it in raster
        order.

    Raises:
        ValueError: for `channels != 1` (no channel masks), a non-positive
            `filters` / `num_layers`, `levels < 2`, or an even or
            non-positive kernel size.

    Example:
        >>> model = pixelcnn((28, 28, 1), filters=32, num_layers=5)
        >>> logits = model(x)                  # (batch, 28, 28, 256)
    """
    if (not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                   for s in image_shape)):
        raise ValueError(
            "image_shape must be (height, width, channels) of positive ints; "
            f"got {image_shape!r}")
    if image_shape[-1] != 1:
        raise ValueError(
            "pixelcnn supports grayscale images only (channels == 1; channel "
            f"masks are not implemented); got image_shape={tuple(image_shape)}")
    check_positive_int(filters, "filters")
    check_positive_int(num_layers, "num_layers")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2; got {levels!r}")
    _check_odd(kernel_size, "kernel_size")
    _check_odd(first_kernel_size, "first_kernel_size")

    inputs = keras.Input(shape=tuple(image_shape), name="image")
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    h = MaskedConv2D(filters, first_kernel_size, mask_type="A",
                     name="conv_a")(x)
    for k in range(1, num_layers):
        r = keras.layers.ReLU(name=f"res{k}_relu")(h)
        r = MaskedConv2D(filters, kernel_size, mask_type="B",
                         name=f"res{k}_conv_b")(r)
        h = keras.layers.Add(name=f"res{k}_add")([h, r])
    h = keras.layers.ReLU(name="head_relu1")(h)
    h = keras.layers.Conv2D(filters, 1, name="head_conv")(h)
    h = keras.layers.ReLU(name="head_relu2")(h)
    logits = keras.layers.Conv2D(levels, 1, name="logits")(h)
    return keras.Model(inputs, logits, name="pixelcnn")
