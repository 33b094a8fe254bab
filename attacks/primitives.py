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
from keras import ops

from core import backends

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


def require_eager(name: str, x: Any) -> None:
    """Raises ValueError when `x` is symbolic (inside `tf.function` /
    `jax.jit`): attack `name` runs its outer loop on the host
    (`attacks.EAGER_ONLY`)."""
    if backends.is_traced(x):
        raise ValueError(
            f"{name} runs its outer loop on the host and must be called "
            "eagerly, not inside tf.function / jax.jit (attacks.EAGER_ONLY)")


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
    x = ops.convert_to_tensor(x)
    if len(x.shape) != 4:
        raise ValueError(
            "x must have shape (batch, height, width, channels); "
            f"got shape {tuple(x.shape)}"
        )
    if not keras.backend.is_float_dtype(x.dtype):
        raise ValueError(f"x must be a float tensor in [0, 1]; got "
                         f"{keras.backend.standardize_dtype(x.dtype)}")
    if y is not None:
        y_shape = tuple(ops.shape(ops.convert_to_tensor(y)))
        if len(y_shape) != 1:
            raise ValueError(
                f"y must hold integer labels of shape (batch,); got {y_shape}"
            )
    if not backends.is_traced(x) and x.shape[0] != 0:
        lo = float(ops.min(x))
        hi = float(ops.max(x))
        if lo < clip_min - 1e-6 or hi > clip_max + 1e-6:
            raise ValueError(
                f"x must lie in [clip_min, clip_max] = [{clip_min}, "
                f"{clip_max}]; got values in [{lo:.4g}, {hi:.4g}]"
            )


def call_model(model: Callable, x: Any) -> Any:
    """Logits of `model` at `x`, with `training=False` for Keras models so
    BatchNorm uses (and does not update) its moving statistics."""
    if isinstance(model, keras.layers.Layer):
        return model(x, training=False)
    return model(x)


def default_labels(model: Callable, x: Any) -> Any:
    """The model's predicted labels, int32 `(batch,)`, used when `y` is None
    (avoids the label-leaking effect, Kurakin et al. 2017, arXiv 1611.01236)."""
    return ops.cast(ops.argmax(call_model(model, x), axis=-1), "int32")


def per_example_loss(logits: Any, y: Any, loss: str) -> Any:
    """Per-example loss `(batch,)` that an untargeted attack maximises.

    "ce": softmax cross-entropy of the label `y`.
    "cw": Carlini-Wagner margin max_{j != y} z_j - z_y (2017, f_6).
    """
    logits = ops.cast(logits, "float32")
    if loss == "ce":
        return ops.sparse_categorical_crossentropy(y, logits,
                                                   from_logits=True)
    z_y, z_other = logit_margins(logits, y)
    return z_other - z_y


def _batch_norm(v: Any, norm: str) -> Any:
    """Per-example norm of `v`, shape `(batch, 1, 1, 1)`."""
    axes = tuple(range(1, len(v.shape)))
    if norm == "inf":
        return ops.max(ops.abs(v), axis=axes, keepdims=True)
    return ops.sqrt(ops.sum(ops.square(v), axis=axes, keepdims=True))


def steepest_step(grad: Any, norm: str) -> Any:
    """Unit steepest-ascent direction: sign(g) for L-inf, g/||g||_2 for L2."""
    if norm == "inf":
        return ops.sign(grad)
    return grad / ops.maximum(_batch_norm(grad, "2"), _TINY)


def project(delta: Any, eps: Any, norm: str) -> Any:
    """Euclidean projection of `delta` onto the eps-ball of `norm`."""
    if norm == "inf":
        return ops.clip(delta, -eps, eps)
    scale = ops.minimum(1.0, eps / ops.maximum(_batch_norm(delta, "2"),
                                               _TINY))
    return delta * scale


def is_seed_pair(seed: Any) -> bool:
    """Whether `seed` is a stateless seed pair (a tuple/list of two ints or
    an int tensor of shape (2,)) rather than None, an int or a
    `keras.random.SeedGenerator`."""
    if seed is None or isinstance(seed, (int, np.integer,
                                         keras.random.SeedGenerator)):
        return False
    if isinstance(seed, (tuple, list)):
        return len(seed) == 2
    return tuple(seed.shape) == (2,)


def uniform(shape: Any, seed: Any, minval: Any = 0.0, maxval: Any = 1.0,
            dtype: str = "float32", offset: int = 0) -> Any:
    """`keras.random.uniform` for a seed that is None, an int or a
    `SeedGenerator`; a stateless draw keyed by `(seed[0], seed[1] +
    offset)` for a seed pair (`is_seed_pair`). Integer dtypes draw
    integers in `[minval, maxval)`."""
    if is_seed_pair(seed):
        pair = (seed[0], seed[1] + offset)
        return backends.stateless_uniform(shape, pair, minval, maxval, dtype)
    if seed is None:
        return backends.unseeded_uniform(shape, minval, maxval, dtype)
    if keras.backend.is_int_dtype(dtype):
        return keras.random.randint(shape, minval, maxval, dtype, seed=seed)
    return keras.random.uniform(shape, minval, maxval, dtype, seed=seed)


def normal(shape: Any, seed: Any, offset: int = 0) -> Any:
    """Standard normal float32 draws; `seed` as in `uniform`."""
    if is_seed_pair(seed):
        return backends.stateless_normal(shape, (seed[0], seed[1] + offset))
    if seed is None:
        return backends.unseeded_normal(shape)
    return keras.random.normal(shape, seed=seed)


def random_in_ball(
    x: Any, eps: Any, norm: str, seed: Any
) -> Any:
    """A uniform random point of the eps-ball around `x` (not yet clipped).

    L-inf: uniform in [-eps, eps] per pixel (Madry et al. 2018).
    L2: uniform in the ball: a Gaussian direction times eps * u^(1/d).
    `seed`: a stateless seed pair, an int, a `keras.random.SeedGenerator`
    (what a compiled training step passes under JAX) or None for the
    global generator.
    """
    shape = ops.shape(x)
    if norm == "inf":
        return x + uniform(shape, seed, -1.0, 1.0) * eps
    direction = normal(shape, seed)
    direction /= ops.maximum(_batch_norm(direction, "2"), _TINY)
    dim = float(np.prod(x.shape[1:]))
    u = uniform((shape[0], 1, 1, 1), seed, 0.0, 1.0, offset=1)
    return x + direction * eps * ops.power(u, 1.0 / dim)


def success(logits: Any, y: Any, targeted: bool) -> Any:
    """Bool `(batch,)`: misclassified (untargeted) or hit the target."""
    pred = ops.cast(ops.argmax(logits, axis=-1), "int32")
    y = ops.cast(y, "int32")
    return ops.equal(pred, y) if targeted else ops.not_equal(pred, y)


def better(
    succ_new: Any,
    loss_new: Any,
    succ_old: Any,
    loss_old: Any,
) -> Any:
    """Bool `(batch,)`: the new point is worse for the model than the old.

    Success counts first, then the attacker's objective (`loss` here is
    already signed so that larger is better for the attacker).
    """
    return ops.logical_or(
        ops.logical_and(succ_new, ops.logical_not(succ_old)),
        ops.logical_and(ops.equal(succ_new, succ_old), loss_new > loss_old),
    )


def select(mask: Any, a: Any, b: Any) -> Any:
    """Per-example `where(mask, a, b)` with `mask` of shape `(batch,)`."""
    mask = ops.reshape(mask, (-1,) + (1,) * (len(a.shape) - 1))
    return ops.where(mask, a, b)


def keep_worst(best: tuple | None, run: tuple) -> tuple:
    """Per example, the worse of two attack runs for the model (`better`):
    each run is `(x_adv, loss, success)` with x_adv `(batch, ...)`, loss
    float32 `(batch,)` (larger is better for the attacker) and success
    bool `(batch,)`; `best=None` (no run yet) returns `run`. This is how
    restarts keep the worst case (Madry et al. 2018, Sec. 3)."""
    if best is None:
        return run
    worse = better(run[2], run[1], best[2], best[1])
    return (select(worse, run[0], best[0]), ops.where(worse, run[1], best[1]),
            ops.where(worse, run[2], best[2]))


def seed_pair(seed: Any, restart: int) -> Any:
    """The seed of restart number `restart`: `(seed, restart)` for an int
    seed (stateless), `(seed[0], seed[1] + 2 restart)` for a seed pair
    (offsets 0 and 1 stay free for `uniform`/`normal`), the generator
    itself for a `SeedGenerator` (it advances), or None."""
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    if is_seed_pair(seed):
        return (seed[0], seed[1] + 2 * int(restart))
    return (int(seed), int(restart))


def as_scalar(value: float) -> Any:
    """A float32 scalar tensor: passing tensors, not Python floats, into the
    compiled loops avoids one retrace per eps value."""
    return ops.convert_to_tensor(float(value), "float32")



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


def to_tanh_space(x: Any, lo: float, hi: float) -> Any:
    """`w = atanh(2 (x - lo) / (hi - lo) - 1)`, float32 of the shape of
    `x`, the argument clipped to +-TANH_BOUND so that w stays finite."""
    unit = (x - lo) / (hi - lo) * 2.0 - 1.0
    return ops.arctanh(ops.clip(unit, -TANH_BOUND, TANH_BOUND))


def from_tanh_space(w: Any, lo: float, hi: float) -> Any:
    """The inverse of `to_tanh_space`: a point of `[lo, hi]`."""
    return lo + (hi - lo) * (ops.tanh(w) + 1.0) / 2.0


def logit_margins(logits: Any, y: Any
                  ) -> tuple[Any, Any]:
    """`(Z_y, max_{i != y} Z_i)`, each float32 `(batch,)`, from logits
    `(batch, classes)` and int labels `(batch,)` (C&W's f_6 terms)."""
    logits = ops.cast(logits, "float32")
    onehot = ops.one_hot(ops.cast(y, "int32"), logits.shape[-1],
                         dtype="float32")
    z_y = ops.sum(onehot * logits, axis=-1)
    z_other = ops.max(logits - 1e9 * onehot, axis=-1)
    return z_y, z_other


def prepare_min_norm(model: Callable, x: Any, y: Any, *, eps: float | None,
                     clip_min: float, clip_max: float, targeted: bool
                     ) -> tuple[Any, Any, Any, int]:
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
    x = ops.convert_to_tensor(x)
    x32 = ops.cast(x, "float32")
    if y is None:
        y = default_labels(model, x32)
    y = ops.cast(y, "int32")
    batch = int(x32.shape[0]) if x32.shape[0] is not None \
        else int(ops.shape(x32)[0])
    return x, x32, y, batch
