"""Stochastic activation pruning (SAP), a test-time randomized defense."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="robust_recipes")
class StochasticActivationPruning(keras.layers.Layer):
    """Randomly prunes activations, keeping large ones more often (SAP).

    For every example independently, the layer flattens all its activations
    `a` (any rank after the batch axis), forms the sampling distribution
    `p_j = |a_j| / sum_k |a_k|`, and draws `r` indices with replacement from
    it. An activation drawn at least once is kept and divided by its keep
    probability `1 - (1 - p_j)^r`; every other activation is set to zero. The
    output is therefore an unbiased estimate of the input:
    `E[output_j] = a_j`.

    The number of draws is `r = max(1, round(ratio * n))`, where `n` is the
    number of activations per example. The paper names its variants SAP-k,
    with k the number of draws as a percentage of `n`, and its headline
    results use SAP-100, hence `ratio=1.0` by default.

    Unlike `Dropout`, the layer is random at inference as well as in
    training (the defense acts at test time); `active=False` turns it into
    the identity for clean baselines.

    Threat model: `randomized = True`, so robust accuracy must be measured
    with EOT (Athalye, Carlini & Wagner 2018, arXiv 1802.00420, Sec. 4.1
    and 5.3, which breaks SAP this way). `differentiable = True`: the output
    is a sampled 0/1 mask times the input times `1 / q_j`. Both the mask
    and `q_j` are held constant in the backward pass, so the gradient is
    `diag(mask_j / q_j)`, whose expectation is the identity: the exact
    gradient of `E[output] = input`. EOT averages of it are therefore
    unbiased (differentiating through `q_j` would not be).

    Args:
        ratio: float > 0, number of draws per example as a multiple of the
            number of activations of that example. Default 1.0 (SAP-100).
        active: bool, apply the pruning when True; identity when False.
        seed: int or None, seed of the layer's `keras.random.SeedGenerator`.
            A fixed seed makes a sequence of calls reproducible.
        **kwargs: forwarded to `keras.layers.Layer` (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(batch, ...)`, typically
            `(batch, height, width, channels)` post-ReLU activations; any
            real values are accepted (magnitudes are used). The per-example
            size `n` must be static.

    Returns:
        A tensor of the same shape and dtype as `inputs`: kept activations
        rescaled by `1 / (1 - (1 - p_j)^r)` (so values can exceed the input
        range), the rest zero. Zeros in the input stay zero; an all-zero
        example is returned unchanged.

    Raises:
        ValueError: if `ratio` is not a positive finite number, or `active`
            is not a bool (messages give the bad value and accepted ones).

    Example:
        >>> x = keras.Input((8, 8, 16))
        >>> h = keras.layers.Conv2D(16, 3, activation="relu")(x)
        >>> h = StochasticActivationPruning(ratio=1.0, seed=0)(h)

    References:
        Dhillon, Azizzadenesheli, Lipton, Bernstein, Kossaifi, Khanna,
        Anandkumar 2018, "Stochastic Activation Pruning for Robust
        Adversarial Defense", ICLR, arXiv 1803.01442, Sec. 3 and
        Algorithm 1 (sampling with replacement and the rescaling by the
        inverse keep probability); SAP-k naming in the experiments section.
    """

    differentiable = True
    randomized = True

    def __init__(self, ratio=1.0, active=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        if (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                or not math.isfinite(ratio) or ratio <= 0):
            raise ValueError(
                f"ratio must be a finite number > 0 (1.0 = SAP-100); "
                f"got {ratio!r}")
        if not isinstance(active, bool):
            raise ValueError(
                f"active must be one of (True, False); got {active!r}")
        self.ratio = float(ratio)
        self.active = active
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def num_samples(self, input_shape):
        """Returns the number of draws `r` for a `(batch, ...)` shape."""
        n = math.prod(input_shape[1:])
        return max(1, int(round(self.ratio * n)))

    def call(self, inputs):
        if not self.active:
            return inputs
        shape = tuple(inputs.shape)
        if any(d is None for d in shape[1:]):
            raise ValueError(
                "StochasticActivationPruning needs static non-batch dims; "
                f"got shape {shape}")
        n = math.prod(shape[1:])
        r = self.num_samples(shape)
        a = ops.reshape(ops.cast(inputs, "float32"), (-1, n))
        mag = ops.abs(a)
        nonzero = mag > 0
        # All-zero rows would give all -inf logits; sample uniformly there
        # (the output is zero anyway).
        empty = ops.logical_not(ops.any(nonzero, axis=1, keepdims=True))
        logits = ops.where(nonzero, ops.log(ops.where(nonzero, mag, 1.0)),
                           -float("inf"))
        logits = ops.where(empty, 0.0, logits)
        # Algorithm 1: r draws with replacement from p = |a| / sum |a|.
        draws = keras.random.categorical(
            logits, r, seed=self.seed_generator)
        counts = ops.stop_gradient(_count_draws(draws, n))
        out = prune_and_rescale(a, counts, r)
        return ops.cast(ops.reshape(out, (-1,) + shape[1:]), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"ratio": self.ratio, "active": self.active, "seed": self.seed})
        return config


def _count_draws(draws, n):
    """int32 `(batch, n)`: how often each of `n` indices occurs in each row
    of `draws` `(batch, r)`. A scatter-add, which compiles under jax.jit
    with a dynamic batch (a batched `ops.bincount` does not)."""
    draws = ops.cast(draws, "int32")
    batch, r = ops.shape(draws)[0], draws.shape[1]
    rows = ops.repeat(ops.expand_dims(ops.arange(batch, dtype="int32"), 1),
                      r, axis=1)
    index = ops.stack([ops.reshape(rows, (-1,)), ops.reshape(draws, (-1,))],
                      axis=1)
    ones = ops.ones_like(ops.reshape(draws, (-1,)))
    return ops.scatter(index, ones, (batch, n))


def prune_and_rescale(a, counts, r):
    """Applies SAP's keep mask and inverse-probability rescaling.

    Args:
        a: float32 `(batch, n)` flattened activations.
        counts: int `(batch, n)`, how often each activation was drawn.
        r: int, total draws per example.

    Returns:
        float32 `(batch, n)`: `a_j / (1 - (1 - p_j)^r)` where
        `counts_j > 0`, else 0, with `p_j = |a_j| / sum_k |a_k|`.
    """
    mag = ops.abs(a)
    total = ops.sum(mag, axis=1, keepdims=True)
    p = mag / ops.maximum(total, 1e-30)
    # Keep probability q = 1 - (1 - p)^r, computed as -expm1(r log1p(-p))
    # for accuracy at small p; p is clipped away from 0 and 1 so neither
    # the value nor its gradient becomes inf/NaN.
    p = ops.clip(p, 1e-30, 1.0 - 1e-7)
    keep_prob = -ops.expm1(r * ops.log1p(-p))
    # Constant in the backward pass: gradient mask / q is unbiased for the
    # identity Jacobian of E[output] (see the class docstring).
    keep_prob = ops.stop_gradient(keep_prob)
    kept = ops.logical_and(counts > 0, mag > 0)
    return ops.where(kept, a / keep_prob, 0.0)
