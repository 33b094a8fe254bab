"""Feature-denoising block (Xie, Wu, van der Maaten, Yuille, He 2019)."""

import math

import keras
from keras import ops

from layers.squeezers import MedianSmoothing2D, window_stack

KINDS = ("gaussian", "dot_product", "mean", "median", "bilateral")
_EMBEDDING_KINDS = ("gaussian", "dot_product", "bilateral")


def _dot_product_aggregate(theta, phi, g, order=None):
    """`y_i = (1/N) sum_j (theta_i . phi_j) g_j` over flattened positions.

    Args:
        theta, phi: tensors `(batch, N, d)`.
        g: tensor `(batch, N, C)`.
        order: `"channels"` computes the `(d, C)` matrix `phi^T g` first,
            then `theta @ (phi^T g)`: `O(N * d * C)` time and `O(d * C)`
            memory. `"positions"` builds the `(N, N)` affinity
            `theta phi^T` first: `O(N^2 * (d + C))` time and `O(N^2)`
            memory. `None` chooses `"channels"` when `C <= N` or when `N`
            is not known statically, else `"positions"`. The two orders
            are equal up to float rounding.

    Returns:
        tensor `(batch, N, C)`.
    """
    n_static = g.shape[1]
    channels = g.shape[-1]
    if order is None:
        if n_static is None or channels is None or channels <= n_static:
            order = "channels"
        else:
            order = "positions"
    if order == "channels":
        y = ops.matmul(theta, ops.matmul(ops.transpose(phi, (0, 2, 1)), g))
    elif order == "positions":
        y = ops.matmul(ops.matmul(theta, ops.transpose(phi, (0, 2, 1))), g)
    else:
        raise ValueError(
            f"order must be None, 'channels' or 'positions'; got {order!r}"
        )
    n = ops.cast(ops.shape(g)[1], y.dtype)
    return y / n


def _neighbourhoods(x):
    """3x3 neighbourhoods of every pixel, zero padded, with a validity mask.

    Args:
        x: tensor `(batch, height, width, channels)` with static channels.

    Returns:
        `(patches, mask)`: `patches` is `(batch, height, width, 9,
        channels)`, neighbour `k = 3 * dy + dx` for offsets `dy, dx` in
        `{-1, 0, 1}` (row-major); out-of-image neighbours are zeros.
        `mask` is `(1, height, width, 9, 1)` in x's dtype, 1 for in-image
        neighbours and 0 for padding.
    """
    channels = x.shape[-1]
    pads = [[0, 0], [1, 1], [1, 1], [0, 0]]

    def patches_of(t, c):
        return window_stack(ops.pad(t, pads), 3, 3)

    shape = ops.shape(x)
    ones = ops.ones((1, shape[1], shape[2], 1), dtype=x.dtype)
    return patches_of(x, channels), patches_of(ones, 1)


@keras.saving.register_keras_serializable(package="robust_recipes")
class NonLocalDenoise(keras.layers.Layer):
    """Residual feature-denoising block: `x + BN(Conv1x1(D(x)))`.

    The block of Xie et al. 2019, Sec. 4 (Fig. 4):

        out = x + BN_gamma0(Conv1x1_{C->C}(D(x)))

    with no ReLU after the residual add. The 1x1 conv (`conv`) has no bias
    and He fan-out truncated-normal init (`VarianceScaling(2.0, "fan_out",
    "truncated_normal")`); the BatchNormalization after it (`bn`, momentum
    0.9, epsilon 1e-5) starts with `gamma = 0`, so at initialisation the
    block is exactly the identity and can be inserted into a pretrained
    network without changing it.

    Denoising operations `D` (`kind`), with `N = H * W`, positions `i, j`
    and `g = x` always (no g-embedding, no projection besides `conv`):

    - `"gaussian"` (non-local means, softmax):
      `y_i = sum_j softmax_j(theta_i . phi_j / sqrt(d)) x_j`, softmax over
      all `N` positions `j`, `d` = channels of theta. Materialises the
      `(N, N)` affinity: `O(N^2 * C)` time and `O(N^2)` memory per image,
      e.g. `N = 3136` at 56x56 (res2 of a 224 input) is ~9.8 M floats,
      ~37.5 MiB per image.
    - `"dot_product"`: `y_i = (1/N) sum_j (theta_i . phi_j) x_j`, computed
      as `theta @ (phi^T x) / N` (`O(N * C^2)`) when `C <= N`, else via
      the `(N, N)` affinity; the results are mathematically equal.
    - `"mean"`: per-channel 3x3 mean, stride 1, "same" size. Padding is
      excluded from the average: each output divides by the number of
      in-image neighbours (9 inside, 6 on edges, 4 in corners), as
      `keras.layers.AveragePooling2D(3, 1, "same")` on TensorFlow.
    - `"median"`: per-channel 3x3 median, stride 1, borders padded in
      numpy "reflect" mode (scipy `mode="mirror"`), via
      `MedianSmoothing2D(3)`; needs height and width >= 2.
    - `"bilateral"`: as `"gaussian"` but `j` restricted to the 3x3 window
      around `i`: softmax over the in-image neighbours only (out-of-image
      neighbours get `-inf` logits, i.e. zero weight; 9 inside, 4 in
      corners).

    With `embed=True`, `theta = Conv1x1_{C->C//2}(x)` (`embedding_theta`)
    and `phi = Conv1x1_{C->C//2}(x)` (`embedding_phi`), no bias, no BN, no
    activation, init `N(0, 0.01)`; with `embed=False`, `theta = phi = x`.
    Only gaussian, dot_product and bilateral use embeddings; for mean and
    median `embed` is ignored (stored in the config, creates no weights).

    Trainable parameters: `2 * C * (C // 2) + C * C + 2 * C` with
    embeddings, `C * C + 2 * C` without (plus BN's `2 * C` non-trainable
    moving statistics). The released models: ResNet-152 "+4 denoise"
    uses `kind="gaussian", embed=True`; ResNeXt-101 32x8d "DenoiseAll"
    uses `kind="dot_product", embed=False`.

    Threat model: `differentiable = True`, `randomized = False` (a
    deterministic, differentiable part of the network: attack it directly
    with gradients; Sec. 6.3's ablations compare the kinds under PGD).

    Args:
        kind: one of `KINDS` = `("gaussian", "dot_product", "mean",
            "median", "bilateral")`.
        embed: bool, whether theta/phi are 1x1 embeddings to `C // 2`
            channels (gaussian, dot_product, bilateral only).
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `(batch, height, width, channels)`,
            channels-last, with `channels` known at build time (and >= 2
            when embeddings are used). Height and width may be dynamic.
        training: forwarded to the BatchNormalization.

    Returns:
        tensor of the input's shape, in the layer's compute dtype
        (float32 by default).

    Raises:
        ValueError: for a `kind` not in `KINDS` (the message lists them), a
            non-bool `embed`, or, at build, an input that is not rank 4,
            has unknown channels, or has fewer than 2 channels while
            embeddings are used.

    Example:
        >>> block = NonLocalDenoise("gaussian", embed=True)
        >>> y = block(features)          # (B, 56, 56, 256) -> same shape

    References:
        Xie, Wu, van der Maaten, Yuille, He 2019, "Feature Denoising for
        Improving Adversarial Robustness", CVPR (arXiv 1812.03411), Sec. 4
        (denoising block and operations) and Sec. 6.3 (ablations).
    """

    differentiable = True
    randomized = False

    def __init__(self, kind="gaussian", embed=True, **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        if not isinstance(embed, bool):
            raise ValueError(f"embed must be a bool; got {embed!r}")
        self.kind = kind
        self.embed = embed
        self.supports_masking = False

    @property
    def uses_embedding(self):
        """True when theta/phi are learned 1x1 embeddings."""
        return self.embed and self.kind in _EMBEDDING_KINDS

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "NonLocalDenoise expects (batch, height, width, channels); "
                f"got shape {tuple(input_shape)}"
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("the channel dimension must be known at build")
        if self.uses_embedding:
            if channels < 2:
                raise ValueError(
                    f"embeddings need >= 2 channels; got {channels}"
                )
            for name in ("embedding_theta", "embedding_phi"):
                conv = keras.layers.Conv2D(
                    channels // 2,
                    1,
                    use_bias=False,
                    kernel_initializer=keras.initializers.RandomNormal(
                        stddev=0.01
                    ),
                    dtype=self.dtype_policy,
                    name=name,
                )
                conv.build(input_shape)
                setattr(self, name, conv)
        if self.kind == "median":
            self.median = MedianSmoothing2D(
                3, dtype=self.dtype_policy, name="median"
            )
        self.conv = keras.layers.Conv2D(
            channels,
            1,
            use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=2.0, mode="fan_out", distribution="truncated_normal"
            ),
            dtype=self.dtype_policy,
            name="conv",
        )
        self.conv.build(input_shape)
        self.bn = keras.layers.BatchNormalization(
            momentum=0.9,
            epsilon=1e-5,
            gamma_initializer="zeros",
            dtype=self.dtype_policy,
            name="bn",
        )
        self.bn.build(input_shape)
        self.built = True

    def denoise(self, inputs):
        """The denoising operation `D(x)` alone, same shape as `inputs`."""
        x = ops.cast(inputs, self.compute_dtype)
        if self.kind == "mean":
            # TF's SAME average pooling divides by the in-image count.
            return ops.average_pool(x, 3, strides=1, padding="same")
        if self.kind == "median":
            return ops.cast(self.median(x), self.compute_dtype)
        if self.uses_embedding:
            theta, phi = self.embedding_theta(x), self.embedding_phi(x)
        else:
            theta = phi = x
        d = theta.shape[-1]
        if self.kind == "bilateral":
            phi_nb, mask = _neighbourhoods(phi)
            x_nb, _ = _neighbourhoods(x)
            # (B, H, W, 9): theta_i . phi_j for the 9 neighbours j of i.
            logits = ops.sum(
                ops.expand_dims(theta, 3) * phi_nb, axis=-1
            ) / math.sqrt(d)
            logits = ops.where(
                mask[..., 0] > 0, logits, ops.full_like(logits, -float("inf"))
            )
            weights = ops.softmax(logits, axis=-1)
            return ops.sum(ops.expand_dims(weights, -1) * x_nb, axis=3)
        shape = ops.shape(x)
        b, h, w, c = shape[0], shape[1], shape[2], x.shape[-1]
        theta = ops.reshape(theta, (b, h * w, d))
        phi = ops.reshape(phi, (b, h * w, d))
        g = ops.reshape(x, (b, h * w, c))
        if self.kind == "gaussian":
            logits = ops.matmul(theta, ops.transpose(phi, (0, 2, 1)))
            weights = ops.softmax(logits / math.sqrt(d), axis=-1)
            y = ops.matmul(weights, g)
        else:  # dot_product
            y = _dot_product_aggregate(theta, phi, g)
        return ops.reshape(y, (b, h, w, c))

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        return x + self.bn(self.conv(self.denoise(x)), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"kind": self.kind, "embed": self.embed})
        return config
