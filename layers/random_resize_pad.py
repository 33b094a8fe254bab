"""Random resize then random zero-pad, a test-time randomized defense."""

import keras
from keras import ops

INTERPOLATIONS = ("nearest", "bilinear")


@keras.saving.register_keras_serializable(package="robust_recipes")
class RandomResizePad(keras.layers.Layer):
    """Resizes to a random square size, then zero-pads at a random offset.

    Each call draws one size `rnd` uniformly from the integers in
    `[min_size, max_size)`, resizes the whole batch to `rnd x rnd`, then
    draws `top` and `left` uniformly from `[0, max_size - rnd]` and
    zero-pads to `max_size x max_size` with the image at that offset. As in
    the paper's reference code, the size and offset are shared by every
    example of one call (one draw per batch); every call draws anew.

    With the paper's ImageNet setting (input 299, `min_size=299`,
    `max_size=331`) there are 32 sizes and, for size `rnd`,
    `(332 - rnd)^2` offsets, 12528 patterns in all, as the paper counts.

    Unlike Keras's preprocessing augmentations, the layer is random at
    inference as well (the defense acts at test time). With
    `active=False` it is deterministic: the input is resized to
    `min_size x min_size` (skipped when it already has that size) and
    placed at the centre, `top = left = (max_size - min_size) // 2`, so the
    output shape is the same in both modes and downstream layers build.

    Threat model: `randomized = True`, so robust accuracy must be measured
    with EOT (Athalye, Carlini & Wagner 2018, arXiv 1802.00420, Sec. 5.3).
    `differentiable = True`: resize (either interpolation) and padding have
    gradients for each drawn size and offset.

    Implementation note: a compiled graph (`tf.function`, `jax.jit`, XLA)
    needs static shapes, and the drawn size is a tensor, so `call` does
    not resize to `rnd x rnd` and pad: it applies, per axis, a
    `(max_size, size)` interpolation matrix whose rows `top..top+rnd-1`
    hold `tf.image.resize`'s half-pixel-centre weights (nearest: one-hot
    rows, an exact copy; bilinear: the two-tap weights) and whose other
    rows are zero (the padding). Only `keras.ops` and `keras.random` are
    used, so it runs on every backend, eagerly and compiled; its
    randomness comes from the layer's own `keras.random.SeedGenerator`.

    Args:
        max_size: int >= 2, output height and width (paper: 331).
        min_size: int in `[1, max_size - 1]` or None, smallest drawn size
            (paper: 299, the input size). None means the input's
            `max(height, width)`, resolved when the layer is built; the
            input must then be smaller than `max_size`.
        interpolation: one of `("nearest", "bilinear")`; the paper's code
            uses nearest neighbour.
        active: bool; random when True, deterministic centred pad when
            False.
        seed: int or None, seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: forwarded to `keras.layers.Layer` (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(batch, height, width, channels)` with static
            height, width and channels, pixels typically in `[0, 1]`.

    Returns:
        Tensor `(batch, max_size, max_size, channels)`, dtype of `inputs`,
        zero outside the pasted `rnd x rnd` region. Bilinear resizing keeps
        values within the input range; nearest copies input values.

    Raises:
        ValueError: for a bad `max_size`, `min_size`, `interpolation` or
            `active` (the message names the bad value and accepted ones),
            or when built on an input that is not rank 4, or (with
            `min_size=None`) whose size is unknown or not below `max_size`.

    Example:
        >>> x = keras.Input((299, 299, 3))
        >>> y = RandomResizePad(max_size=331, seed=0)(x)  # (None, 331, 331, 3)

    References:
        Xie, Wang, Zhang, Ren, Yuille 2018, "Mitigating Adversarial Effects
        Through Randomization", ICLR, arXiv 1711.01991, Sec. 3 and Fig. 1
        (random resizing layer then random padding layer; 299 -> [299, 331)
        -> 331x331).
    """

    differentiable = True
    randomized = True

    def __init__(self, max_size=331, min_size=None, interpolation="nearest",
                 active=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        if (isinstance(max_size, bool) or not isinstance(max_size, int)
                or max_size < 2):
            raise ValueError(
                f"max_size must be an int >= 2; got {max_size!r}")
        if min_size is not None and (
                isinstance(min_size, bool) or not isinstance(min_size, int)
                or not 1 <= min_size <= max_size - 1):
            raise ValueError(
                f"min_size must be None or an int in [1, {max_size - 1}] "
                f"(max_size - 1); got {min_size!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}; "
                f"got {interpolation!r}")
        if not isinstance(active, bool):
            raise ValueError(
                f"active must be one of (True, False); got {active!r}")
        self.max_size = max_size
        self.min_size = min_size
        self.interpolation = interpolation
        self.active = active
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._min_size = min_size

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "RandomResizePad expects (batch, height, width, channels); "
                f"got shape {tuple(input_shape)}")
        if self.min_size is None:
            height, width = input_shape[1], input_shape[2]
            if height is None or width is None:
                raise ValueError(
                    "min_size=None needs a static input height and width; "
                    f"got shape {tuple(input_shape)}; pass min_size")
            size = max(height, width)
            if size >= self.max_size:
                raise ValueError(
                    f"input size {size} must be < max_size={self.max_size} "
                    "when min_size=None; pass min_size or a larger max_size")
            self._min_size = size

    def draw_params(self):
        """Draws one `(rnd, top, left)` triple from the seed generator.

        `call` draws exactly this way, so a second layer with the same seed
        reproduces a call's parameters (used by the tests).

        Returns:
            Three int32 scalars: `rnd` in `[min_size, max_size)`, `top` and
            `left` in `[0, max_size - rnd]`.
        """
        lo, hi = self._min_size, self.max_size
        u = keras.random.uniform((3,), seed=self.seed_generator)
        u = ops.cast(u, "float32")
        rnd = lo + ops.cast(ops.floor(u[0] * (hi - lo)), "int32")
        rnd = ops.minimum(rnd, hi - 1)
        room = hi - rnd + 1  # number of admissible offsets per axis
        roomf = ops.cast(room, "float32")
        # Clip: float rounding can make u * room equal room.
        top = ops.minimum(ops.cast(ops.floor(u[1] * roomf), "int32"),
                          room - 1)
        left = ops.minimum(ops.cast(ops.floor(u[2] * roomf), "int32"),
                           room - 1)
        return rnd, top, left

    def patterns(self) -> list[tuple[int, int, int, float]]:
        """Every `(rnd, top, left, probability)` a call can draw.

        `rnd` is uniform over `[min_size, max_size)` and, given `rnd`, the
        offsets are uniform over `(max_size - rnd + 1)^2` placements, so the
        probabilities sum to 1. With `active=False` the one deterministic
        pattern, probability 1. The layer must be built (`min_size=None`
        is resolved at build).
        """
        lo, hi = self._min_size, self.max_size
        if lo is None:
            raise ValueError("RandomResizePad.patterns() needs a built layer "
                             "(min_size=None is resolved when it is built)")
        if not self.active:
            return [(lo, (hi - lo) // 2, (hi - lo) // 2, 1.0)]
        out = []
        for rnd in range(lo, hi):
            room = hi - rnd + 1
            p = 1.0 / ((hi - lo) * room * room)
            out += [(rnd, top, left, p) for top in range(room)
                    for left in range(room)]
        return out

    def transform(self, x, rnd, top, left):
        """The deterministic map of one pattern: resize `x` to `rnd x rnd`
        (skipped when it has that size) and zero-pad it to `max_size x
        max_size` with the image at `(top, left)`.

        Args:
            x: float tensor `(batch, height, width, channels)`.
            rnd, top, left: ints or int32 scalars, as `draw_params` gives.

        Returns:
            Tensor `(batch, max_size, max_size, channels)`, dtype of `x`.
        """
        x = ops.convert_to_tensor(x)
        height, width = x.shape[1], x.shape[2]
        rows = self._axis_matrix(height, rnd, top, x.dtype)
        cols = self._axis_matrix(width, rnd, left, x.dtype)
        out = ops.einsum("ih,bhwc->biwc", rows, x)
        return ops.einsum("jw,biwc->bijc", cols, out)

    def call(self, inputs):
        if self.active:
            rnd, top, left = self.draw_params()
        else:
            rnd = self._min_size
            top = left = (self.max_size - rnd) // 2
        return ops.cast(self.transform(inputs, rnd, top, left), inputs.dtype)

    def _axis_matrix(self, size, rnd, start, dtype):
        """float `(max_size, size)`: row `start + i` (`0 <= i < rnd`) holds
        the weights with which output pixel `i` of a resize from `size` to
        `rnd` pixels reads the input (`tf.image.resize`, half-pixel
        centres, no antialiasing; the identity when `rnd == size`); the
        other rows are zero (the padding)."""
        out = ops.arange(self.max_size, dtype="int32")[:, None]
        src = ops.arange(size, dtype="int32")[None, :]
        i = out - start  # output pixel of the resized image
        inside = ops.logical_and(i >= 0, i < rnd)
        scale = size / ops.cast(rnd, "float32")  # float32, as TF's kernels
        centre = (ops.cast(i, "float32") + 0.5) * scale
        if self.interpolation == "nearest":
            near = ops.minimum(ops.cast(ops.floor(centre), "int32"), size - 1)
            weight = ops.cast(ops.equal(src, ops.maximum(near, 0)), "float32")
        else:
            pos = centre - 0.5
            floor = ops.floor(pos)
            lerp = pos - floor
            lower = ops.maximum(ops.cast(floor, "int32"), 0)
            upper = ops.minimum(ops.cast(ops.ceil(pos), "int32"), size - 1)
            weight = (ops.cast(ops.equal(src, lower), "float32") * (1.0 - lerp)
                      + ops.cast(ops.equal(src, upper), "float32") * lerp)
        weight = ops.where(inside, weight, 0.0)
        return ops.cast(weight, dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.max_size, self.max_size,
                input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({
            "max_size": self.max_size,
            "min_size": self.min_size,
            "interpolation": self.interpolation,
            "active": self.active,
            "seed": self.seed,
        })
        return config
