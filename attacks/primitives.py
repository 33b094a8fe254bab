"""Shared pieces of the attack library, public so that every attack (and
the trainers and evaluation, through them) uses one copy: validation,
random starts in the eps-ball, steepest-ascent steps, projection,
per-example losses, argument checks, and the tanh change of variables,
logit margins and prologue of the minimum-norm attacks.

All tensors are float32 images `(batch, height, width, channels)` on the same
pixel scale as `clip_min`/`clip_max` (default `[0, 1]`); `eps` and
`step_size` are on that scale too (e.g. `8 / 255`).

References:
    Madry, Makelov, Schmidt, Tsipras, Vladu 2018, "Towards Deep Learning
    Models Resistant to Adversarial Attacks", arXiv 1706.06083, Eq. 2 (the
    projected step) and Sec. 3 (random start, restarts).
    Carlini & Wagner 2017, arXiv 1608.04644, Sec. V.A, f_6 (margin loss)
    and Sec. V (the tanh change of variables).
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

NORMS = ("inf", "2")
LOSSES = ("ce", "cw")
_TINY = 1e-12


def validate(
    *,
    eps: float,
    norm: str = "inf",
    steps: int = 1,
    step_size: float | None = None,
    restarts: int = 1,
    loss: str = "ce",
    clip_min: float = 0.0,
    clip_max: float = 1.0,
) -> None:
    """Checks the scalar arguments shared by every attack.

    Raises:
        ValueError: naming the bad value and the accepted ones.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    if step_size is not None and not (np.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a number > 0; got {step_size!r}")
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1; got {restarts!r}")
    check_box(clip_min, clip_max)


def check_box(clip_min: float, clip_max: float) -> None:
    """Raises ValueError unless `clip_min < clip_max`."""
    if not clip_min < clip_max:
        raise ValueError(
            f"clip_min must be < clip_max; got clip_min={clip_min!r}, "
            f"clip_max={clip_max!r}"
        )


def check_inputs(x: Any, y: Any, clip_min: float, clip_max: float, *,
                 targeted: bool = False) -> None:
    """Checks the box, `x` (rank 4, float, inside the box) and `y` (rank 1,
    batch; required when `targeted`).

    Runs only when the values are concrete (eager); inside a traced training
    step the checks on values are skipped and only shapes are checked.

    Raises:
        ValueError: if `clip_min >= clip_max`, `targeted` with `y=None`,
            `x` is not a float rank-4 tensor inside `[clip_min, clip_max]`,
            or `y` does not match its batch.
    """
    check_box(clip_min, clip_max)
    if targeted and y is None:
        raise ValueError("targeted=True needs the target labels y; got None")
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4:
        raise ValueError(
            "x must have shape (batch, height, width, channels); "
            f"got shape {tuple(x.shape)}"
        )
    if not x.dtype.is_floating:
        raise ValueError(f"x must be a float tensor in [0, 1]; got {x.dtype}")
    if y is not None:
        y_shape = tf.convert_to_tensor(y).shape
        if y_shape.rank != 1:
            raise ValueError(
                f"y must hold integer labels of shape (batch,); got {y_shape}"
            )
    if tf.executing_eagerly() and x.shape[0] != 0:
        lo = float(tf.reduce_min(x))
        hi = float(tf.reduce_max(x))
        if lo < clip_min - 1e-6 or hi > clip_max + 1e-6:
            raise ValueError(
                f"x must lie in [clip_min, clip_max] = [{clip_min}, "
                f"{clip_max}]; got values in [{lo:.4g}, {hi:.4g}]"
            )


def call_model(model: Callable, x: tf.Tensor) -> tf.Tensor:
    """Logits of `model` at `x`, with `training=False` for Keras models so
    BatchNorm uses (and does not update) its moving statistics."""
    if isinstance(model, keras.layers.Layer):
        return model(x, training=False)
    return model(x)


def default_labels(model: Callable, x: tf.Tensor) -> tf.Tensor:
    """The model's predicted labels, int32 `(batch,)`, used when `y` is None
    (avoids the label-leaking effect, Kurakin et al. 2017, arXiv 1611.01236)."""
    return tf.argmax(call_model(model, x), axis=-1, output_type=tf.int32)


def per_example_loss(logits: tf.Tensor, y: tf.Tensor, loss: str) -> tf.Tensor:
    """Per-example loss `(batch,)` that an untargeted attack maximises.

    "ce": softmax cross-entropy of the label `y`.
    "cw": Carlini-Wagner margin max_{j != y} z_j - z_y (2017, f_6).
    """
    logits = tf.cast(logits, tf.float32)
    if loss == "ce":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
    onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype)
    z_y = tf.reduce_sum(onehot * logits, axis=-1)
    z_other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    return z_other - z_y


def _batch_norm(v: tf.Tensor, norm: str) -> tf.Tensor:
    """Per-example norm of `v`, shape `(batch, 1, 1, 1)`."""
    # Static axes when the rank is known keep the static shape (a dynamic
    # axis list makes every kept dim unknown: (batch, None, None, None)).
    axes = (list(range(1, v.shape.rank)) if v.shape.rank is not None
            else tf.range(1, tf.rank(v)))
    if norm == "inf":
        return tf.reduce_max(tf.abs(v), axis=axes, keepdims=True)
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=axes, keepdims=True))


def steepest_step(grad: tf.Tensor, norm: str) -> tf.Tensor:
    """Unit steepest-ascent direction: sign(g) for L-inf, g/||g||_2 for L2."""
    if norm == "inf":
        return tf.sign(grad)
    return grad / tf.maximum(_batch_norm(grad, "2"), _TINY)


def project(delta: tf.Tensor, eps: tf.Tensor, norm: str) -> tf.Tensor:
    """Euclidean projection of `delta` onto the eps-ball of `norm`."""
    if norm == "inf":
        return tf.clip_by_value(delta, -eps, eps)
    scale = tf.minimum(1.0, eps / tf.maximum(_batch_norm(delta, "2"), _TINY))
    return delta * scale


def random_in_ball(
    x: tf.Tensor, eps: tf.Tensor, norm: str, seed: tuple[int, int] | None
) -> tf.Tensor:
    """A uniform random point of the eps-ball around `x` (not yet clipped).

    L-inf: uniform in [-eps, eps] per pixel (Madry et al. 2018).
    L2: uniform in the ball: a Gaussian direction times eps * u^(1/d).
    `seed` is a stateless seed pair or None for the global generator.
    """
    shape = tf.shape(x)

    def uniform(s, lo, hi, k):
        if seed is None:
            return tf.random.uniform(s, lo, hi)
        return tf.random.stateless_uniform(s, (seed[0], seed[1] + k), lo, hi)

    if norm == "inf":
        return x + uniform(shape, -1.0, 1.0, 0) * eps
    if seed is None:
        direction = tf.random.normal(shape)
    else:
        direction = tf.random.stateless_normal(shape, seed)
    direction /= tf.maximum(_batch_norm(direction, "2"), _TINY)
    dim = tf.cast(tf.reduce_prod(shape[1:]), tf.float32)
    u = uniform(tf.stack([shape[0], 1, 1, 1]), 0.0, 1.0, 1)
    return x + direction * eps * tf.pow(u, 1.0 / dim)


def success(logits: tf.Tensor, y: tf.Tensor, targeted: bool) -> tf.Tensor:
    """Bool `(batch,)`: misclassified (untargeted) or hit the target."""
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.equal(pred, y) if targeted else tf.not_equal(pred, y)


def better(
    succ_new: tf.Tensor,
    loss_new: tf.Tensor,
    succ_old: tf.Tensor,
    loss_old: tf.Tensor,
) -> tf.Tensor:
    """Bool `(batch,)`: the new point is worse for the model than the old.

    Success counts first, then the attacker's objective (`loss` here is
    already signed so that larger is better for the attacker).
    """
    return tf.logical_or(
        tf.logical_and(succ_new, tf.logical_not(succ_old)),
        tf.logical_and(tf.equal(succ_new, succ_old), loss_new > loss_old),
    )


def select(mask: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Per-example `where(mask, a, b)` with `mask` of shape `(batch,)`."""
    shape = tf.concat([tf.shape(mask), tf.ones(tf.rank(a) - 1, tf.int32)], 0)
    return tf.where(tf.reshape(mask, shape), a, b)


def keep_worst(best: tuple | None, run: tuple) -> tuple:
    """Per example, the worse of two attack runs for the model (`better`):
    each run is `(x_adv, loss, success)` with x_adv `(batch, ...)`, loss
    float32 `(batch,)` (larger is better for the attacker) and success
    bool `(batch,)`; `best=None` (no run yet) returns `run`. This is how
    restarts keep the worst case (Madry et al. 2018, Sec. 3)."""
    if best is None:
        return run
    worse = better(run[2], run[1], best[2], best[1])
    return (select(worse, run[0], best[0]), tf.where(worse, run[1], best[1]),
            tf.where(worse, run[2], best[2]))


def seed_pair(seed: int | None, restart: int) -> tuple[int, int] | None:
    """Stateless seed for restart number `restart`, or None."""
    return None if seed is None else (int(seed), int(restart))


def as_scalar(value: float) -> tf.Tensor:
    """A float32 scalar tensor: passing tensors, not Python floats, into the
    compiled loops avoids one retrace per eps value."""
    return tf.constant(float(value), tf.float32)



# -- argument checks shared by the attacks with host-side loops ------------


def check_int(name: str, value: Any) -> None:
    """Raises ValueError unless `value` is an integer >= 1 (bools refused);
    the message names `name` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def check_c_range(c_init: Any, c_max: Any) -> None:
    """Raises ValueError unless `0 < c_init <= c_max` (finite numbers): the
    range of the C&W trade-off constant c that the L-inf and L0 attacks
    double within."""
    check_number("c_init", c_init, positive=True)
    check_number("c_max", c_max, positive=True)
    if c_max < c_init:
        raise ValueError(f"c_max must be >= c_init; got c_max={c_max!r}, "
                         f"c_init={c_init!r}")


def check_number(name: str, value: Any, *, positive: bool) -> None:
    """Raises ValueError unless `value` is a finite real number, > 0 when
    `positive` else >= 0 (bools refused); the message names `name`."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, bool) and np.isfinite(value) \
        and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}; "
                         f"got {value!r}")


# -- the minimum-norm attacks (cw_l2, cw_linf, cw_l0, lbfgs) ---------------
# Carlini & Wagner 2017, arXiv 1608.04644, Sec. V: the change of variables
# x' = lo + (hi - lo) * (tanh(w) + 1) / 2 keeps x' in the box, and Adam
# (Kingma & Ba 2015, arXiv 1412.6980, Alg. 1, default moments) minimises
# over w.

# Keeps atanh finite for pixels exactly at clip_min / clip_max.
TANH_BOUND = 1.0 - 1e-6
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


def to_tanh_space(x: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
    """`w = atanh(2 (x - lo) / (hi - lo) - 1)`, float32 of the shape of
    `x`, the argument clipped to +-TANH_BOUND so that w stays finite."""
    unit = (x - lo) / (hi - lo) * 2.0 - 1.0
    return tf.atanh(tf.clip_by_value(unit, -TANH_BOUND, TANH_BOUND))


def from_tanh_space(w: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
    """The inverse of `to_tanh_space`: a point of `[lo, hi]`."""
    return lo + (hi - lo) * (tf.tanh(w) + 1.0) / 2.0


def logit_margins(logits: tf.Tensor, y: tf.Tensor
                  ) -> tuple[tf.Tensor, tf.Tensor]:
    """`(Z_y, max_{i != y} Z_i)`, each float32 `(batch,)`, from logits
    `(batch, classes)` and int labels `(batch,)` (C&W's f_6 terms)."""
    logits = tf.cast(logits, tf.float32)
    onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype)
    z_y = tf.reduce_sum(onehot * logits, axis=-1)
    z_other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    return z_y, z_other


def prepare_min_norm(model: Callable, x: Any, y: Any, *, eps: float | None,
                     clip_min: float, clip_max: float, targeted: bool
                     ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, int]:
    """The shared prologue of the minimum-norm attacks (cw_l2, cw_linf,
    cw_l0, lbfgs): checks `eps` (None or >= 0), `clip_min < clip_max`, a
    target for `targeted=True` and the inputs (`check_inputs`).

    Returns:
        `(x as a tensor, x as float32, y as int32 (the model's predictions
        when None), batch size as a Python int)`.

    Raises:
        ValueError: any of the checks above, naming the bad value.
    """
    if eps is not None:
        check_number("eps", eps, positive=False)
    check_inputs(x, y, clip_min, clip_max, targeted=targeted)
    x = tf.convert_to_tensor(x)
    x32 = tf.cast(x, tf.float32)
    if y is None:
        y = default_labels(model, x32)
    y = tf.cast(y, tf.int32)
    batch = int(x32.shape[0]) if x32.shape[0] is not None \
        else int(tf.shape(x32)[0])
    return x, x32, y, batch
