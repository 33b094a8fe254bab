"""PixelDefend purification (Song, Kim, Nowozin, Ermon, Kushman 2018)."""

from __future__ import annotations

import copy
import numbers

import keras
import numpy as np
from keras import ops

from core import backends

# Song et al. 2018, Table 2: Fashion-MNIST, eps_defend = 32 on the 0-255
# scale (eps_attack = 8 and 25); CIFAR-10 (Table 3) uses 16.
FASHION_MNIST_EPS_DEFEND = 32 / 255
# Slack, in levels, for float rounding of `x * (levels - 1)`.
_TOLERANCE = 1e-3


@keras.saving.register_keras_serializable(package="robust_recipes")
class PixelDefend(keras.layers.Layer):
    """Greedy purification of an image towards high PixelCNN likelihood.

    Song et al. 2018, Algorithm 1: visiting the pixels in raster order,
    each pixel `x'_ij` is set to the most probable intensity level under
    the PixelCNN's conditional `p(. | x'_<ij)`, given the pixels already
    purified, among the levels within `eps_defend` of the ORIGINAL input
    `x_ij`. Level `k` is the value `k / (levels - 1)`; the allowed levels
    are those with `|k / (levels - 1) - x_ij| <= eps_defend`, plus the
    level nearest `x_ij` (so that a window narrower than the grid spacing,
    e.g. `eps_defend = 0`, quantizes instead of being empty). For inputs on
    the level grid (8-bit images with `levels = 256`) this is exactly the
    paper's integer window `[x - eps, x + eps]` clipped to `[0, 255]`.

    One forward pass of the PixelCNN on the whole batch per pixel, `H * W`
    passes in all, in one `keras.ops.fori_loop` with the image as carry, so
    it runs eagerly and compiled (`tf.function`, `jax.jit`) alike. The
    PixelCNN's weights are weights of this layer (saved with it); it is not
    trained here.

    Threat model: `differentiable = False` (the argmax makes the output
    piecewise constant) and `randomized = False` (greedy decoding, no
    sampling): attack it with BPDA, the identity as backward surrogate, as
    Athalye, Carlini & Wagner 2018 (arXiv 1802.00420, Sec. 5.4.2) do.

    Args:
        pixelcnn: a `keras.Model` mapping float32 `(batch, H, W, 1)` in
            [0, 1] to logits `(batch, H, W, levels)`, autoregressive in
            raster order (`models.pixelcnn.pixelcnn`); or its
            `keras.saving.serialize_keras_object` dict (from `get_config`).
            Deserializing needs the model's custom layers registered, i.e.
            `models.pixelcnn` imported (layers/ may not import models/, so
            this module does not do it).
        eps_defend: float in [0, 1], the purification radius on the [0, 1]
            scale; default 32/255, the paper's Fashion-MNIST setting
            (Table 2).
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: float32 `(batch, H, W, 1)`, pixels in [0, 1] (clipped), with
            the PixelCNN's `(H, W, 1)`.

    Returns:
        float32 `(batch, H, W, 1)` on the grid `k / (levels - 1)`, within
        `max(eps_defend, distance to the nearest level)` of the input at
        every pixel.

    Raises:
        ValueError: if `pixelcnn` is not a Keras model with input
            `(None, H, W, 1)` and output `(None, H, W, levels)`, if
            `eps_defend` is not a number in [0, 1], or (at build) if the
            input shape differs from the PixelCNN's.

    Example:
        >>> pcnn, _ = training.pixelcnn.fit_pixelcnn(train_x, epochs=1,
        ...                                          filters=32, num_layers=5)
        >>> defended = keras.Sequential([PixelDefend(pcnn), classifier])

    References:
        Song, Kim, Nowozin, Ermon & Kushman 2018, "PixelDefend: Leveraging
        Generative Models to Understand and Defend against Adversarial
        Examples", ICLR (arXiv 1710.10766), Sec. 4, Algorithm 1; Table 2
        (Fashion-MNIST, eps_defend = 32/255).
    """

    differentiable = False
    randomized = False

    def __init__(self, pixelcnn, eps_defend=FASHION_MNIST_EPS_DEFEND,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(pixelcnn, dict):
            # Keras's deserialization consumes the dict: leave the caller's.
            pixelcnn = keras.saving.deserialize_keras_object(
                copy.deepcopy(pixelcnn))
        if not isinstance(pixelcnn, keras.Model):
            raise ValueError(
                "pixelcnn must be a keras.Model (or its serialized dict); "
                f"got {type(pixelcnn).__name__}")
        in_shape = tuple(pixelcnn.input_shape)
        out_shape = tuple(pixelcnn.output_shape)
        if (len(in_shape) != 4 or in_shape[-1] != 1 or len(out_shape) != 4
                or None in in_shape[1:3] or out_shape[1:3] != in_shape[1:3]
                or out_shape[-1] is None or out_shape[-1] < 2):
            raise ValueError(
                "pixelcnn must map (batch, H, W, 1) to logits (batch, H, W, "
                f"levels >= 2); got input {in_shape} and output {out_shape}")
        if (isinstance(eps_defend, bool)
                or not isinstance(eps_defend, numbers.Real)
                or not 0.0 <= eps_defend <= 1.0):
            raise ValueError(
                f"eps_defend must be a number in [0, 1]; got {eps_defend!r}")
        self.pixelcnn = pixelcnn
        self.eps_defend = float(eps_defend)
        self.image_shape = in_shape[1:]
        self.levels = int(out_shape[-1])

    def build(self, input_shape):
        if tuple(input_shape[1:]) != self.image_shape:
            raise ValueError(
                f"PixelDefend input must be (batch,) + {self.image_shape} "
                f"(the PixelCNN's); got {tuple(input_shape)}")

    def call(self, inputs):
        height, width, _ = self.image_shape
        n, levels = height * width, self.levels
        x = ops.clip(ops.cast(inputs, "float32"), 0.0, 1.0)
        scaled = ops.reshape(x, (-1, n)) * (levels - 1)
        nearest = ops.round(scaled)
        radius = self.eps_defend * (levels - 1) + _TOLERANCE
        grid = ops.arange(levels, dtype="float32")[None, :]
        # The level values as a table: exactly float32(k / (levels - 1)) in
        # every mode (a graph optimizer may turn a division into a product).
        values = ops.convert_to_tensor(
            np.arange(levels, dtype="float64") / (levels - 1), "float32")

        def body(p, image):
            logits = self.pixelcnn(ops.reshape(image, (-1, height, width, 1)),
                                   training=False)
            logits = ops.take(ops.reshape(ops.cast(logits, "float32"),
                                          (-1, n, levels)), p, axis=1)
            centre = ops.take(scaled, p, axis=1)[:, None]
            allowed = ops.logical_or(
                ops.abs(grid - centre) <= radius,
                grid == ops.take(nearest, p, axis=1)[:, None])
            best = ops.argmax(ops.where(allowed, logits, float("-inf")),
                              axis=-1)
            value = ops.take(values, best)[:, None]
            here = ops.one_hot(p, n, dtype="float32")[None, :] > 0
            return ops.where(here, value, image)

        image = backends.fori_loop(self.pixelcnn, 0, n, body,
                                   ops.reshape(x, (-1, n)))
        return ops.reshape(image, (-1, height, width, 1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "pixelcnn": keras.saving.serialize_keras_object(self.pixelcnn),
            "eps_defend": self.eps_defend,
        })
        return config
