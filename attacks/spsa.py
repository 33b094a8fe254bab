"""SPSA: a score-based (gradient-free) attack with Adam on a finite-difference
gradient estimate.

Uesato, O'Donoghue, van den Oord, Kohli 2018, "Adversarial Risk and the
Dangers of Evaluating Against Weak Attacks", arXiv 1802.05666, Sec. 3.2 and
Alg. 1 (after Spall 1992's simultaneous perturbation stochastic
approximation). The model is only queried for logits; it is never
differentiated, so gradient masking (non-differentiable or
`tf.stop_gradient` layers, shattered gradients) does not stop it.

Alg. 1, per example and step `t` (written here as ascent on the attacker's
objective `f`, the negated loss of the paper):

    v_1, ..., v_{n/2} ~ U{-1, +1}^D                     (Rademacher)
    g_t = 2/n sum_i (f(x_t + delta v_i) - f(x_t - delta v_i)) / (2 delta) v_i
    x_{t+1} = Proj(x_t + Adam_lr(g_t))

with `n = samples` model queries per step (`n/2` antithetic pairs, each
`1/v_i = v_i`), `Proj` the projection onto the eps-ball around `x` and the
box, and Adam's usual moments (beta1 0.9, beta2 0.999, epsilon 1e-8). `f` is
by default the margin loss of the paper (its Sec. 3.1 and Carlini & Wagner's
f_6), `max_{j != y} z_j - z_y` untargeted, `z_t - max_{j != t} z_j` targeted;
or the cross-entropy. The perturbed queries `x_t +- delta v_i` are not
clipped to the box (clipping would bias the estimate at the box faces).

Per example the best iterate `x_1..x_T` is returned (adversarial first, then
higher objective, as `primitives.better`); with `early_stop` an example is no
longer queried once an iterate is adversarial (the paper stops the whole
attack at its success threshold; here each example stops on its own).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from attacks import primitives
from attacks._registry import register_attack

_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8


def _check(samples, delta, max_batch):
    if (isinstance(samples, bool) or not isinstance(samples, (int, np.integer))
            or samples < 2 or samples % 2):
        raise ValueError(
            f"samples must be an even integer >= 2 (antithetic pairs); got "
            f"{samples!r}")
    if (isinstance(delta, bool) or not np.isscalar(delta)
            or not (np.isfinite(delta) and delta > 0)):
        raise ValueError(f"delta must be a number > 0; got {delta!r}")
    if (isinstance(max_batch, bool)
            or not isinstance(max_batch, (int, np.integer)) or max_batch < 1):
        raise ValueError(f"max_batch must be an integer >= 1; got "
                         f"{max_batch!r}")


def _objective(model, x, y, sign, loss, targeted):
    logits = primitives.call_model(model, x)
    obj = sign * primitives.per_example_loss(logits, y, loss)
    return obj, primitives.success(logits, y, targeted)


def _estimate(model, x, y, delta, pairs, max_batch, key, sign, loss):
    """The SPSA gradient of `sign * loss` at `x`, float32 like `x`.

    `pairs` antithetic Rademacher pairs per example, evaluated in model
    calls of at most `max(max_batch, 2 * batch)` images; the draws of chunk
    `j` use the seed `fold_in(key, j)`.
    """
    shape = tf.shape(x)
    n = shape[0]
    per = tf.maximum(1, tf.minimum(pairs, max_batch // tf.maximum(2 * n, 1)))
    chunks = (pairs + per - 1) // per
    grad = tf.zeros_like(x)
    for j in tf.range(chunks):
        k = tf.minimum(per, pairs - j * per)
        bits = tf.random.stateless_uniform(
            tf.concat([[k], shape], 0),
            tf.random.experimental.stateless_fold_in(key, j), 0, 2,
            dtype=tf.int32)
        v = tf.cast(2 * bits - 1, tf.float32)  # (k, n, H, W, C)
        points = x[None] + delta * tf.concat([v, -v], 0)
        flat = tf.reshape(points, tf.concat([[-1], shape[1:]], 0))
        logits = primitives.call_model(model, flat)
        obj = sign * primitives.per_example_loss(logits, tf.tile(y, [2 * k]),
                                            loss)
        obj = tf.reshape(obj, tf.stack([2, k, n]))
        diff = obj[0] - obj[1]  # (k, n)
        grad += tf.reduce_sum(diff[:, :, None, None, None] * v, axis=0)
    return grad / (2.0 * delta * tf.cast(pairs, tf.float32))


_ESTIMATE = tf.function(_estimate, reduce_retracing=True)


def _spsa_loop(model, x, y, x_start, eps, lr, delta, pairs, max_batch, steps,
               seed, lo, hi, norm, targeted, loss, early_stop):
    """Alg. 1 for `steps` Adam steps from `x_start`; returns the best
    iterate per example `(x_best, attacker_objective, success)`."""
    sign = -1.0 if targeted else 1.0
    batch = tf.shape(x)[0]

    def proj(point, origin):
        return tf.clip_by_value(
            origin + primitives.project(point - origin, eps, norm), lo, hi)

    x_adv = proj(x_start, x)
    m = tf.zeros_like(x)
    v = tf.zeros_like(x)
    best_x = x_adv
    best_obj = tf.fill([batch], -float("inf"))
    best_succ = tf.zeros([batch], tf.bool)
    active = tf.ones([batch], tf.bool)
    for t in tf.range(1, steps + 1):
        idx = tf.where(active)
        if tf.size(idx) == 0:
            break
        x0 = tf.gather_nd(x, idx)
        xa = tf.gather_nd(x_adv, idx)
        ya = tf.gather_nd(y, idx)
        key = tf.random.experimental.stateless_fold_in(seed, t)
        g = _estimate(model, xa, ya, delta, pairs, max_batch, key, sign,
                      loss)
        ma = _ADAM_B1 * tf.gather_nd(m, idx) + (1.0 - _ADAM_B1) * g
        va = _ADAM_B2 * tf.gather_nd(v, idx) + (1.0 - _ADAM_B2) * g * g
        step = tf.cast(t, tf.float32)
        m_hat = ma / (1.0 - _ADAM_B1 ** step)
        v_hat = va / (1.0 - _ADAM_B2 ** step)
        xa = proj(xa + lr * m_hat / (tf.sqrt(v_hat) + _ADAM_EPS), x0)
        obj, succ = _objective(model, xa, ya, sign, loss, targeted)
        take = primitives.better(succ, obj, tf.gather_nd(best_succ, idx),
                            tf.gather_nd(best_obj, idx))
        best_x = tf.tensor_scatter_nd_update(
            best_x, idx, primitives.select(take, xa, tf.gather_nd(best_x, idx)))
        best_obj = tf.tensor_scatter_nd_update(
            best_obj, idx, tf.where(take, obj, tf.gather_nd(best_obj, idx)))
        best_succ = tf.tensor_scatter_nd_update(
            best_succ, idx,
            tf.where(take, succ, tf.gather_nd(best_succ, idx)))
        x_adv = tf.tensor_scatter_nd_update(x_adv, idx, xa)
        m = tf.tensor_scatter_nd_update(m, idx, ma)
        v = tf.tensor_scatter_nd_update(v, idx, va)
        if early_stop:
            active = tf.tensor_scatter_nd_update(active, idx,
                                                 tf.logical_not(succ))
    return best_x, best_obj, best_succ


_LOOP = tf.function(_spsa_loop, reduce_retracing=True)


def _seed_tensor(seed):
    """int64 `(2,)` stateless seed; a fresh one from the global generator
    when `seed` is None."""
    if seed is None:
        return tf.random.uniform([2], 0, 2 ** 31 - 1, tf.int64)
    return tf.constant([int(seed), 0], tf.int64)


def _labels(model, x32, y):
    """`y` as int32, or the model's predictions when it is None."""
    if y is None:
        y = primitives.default_labels(model, x32)
    return tf.cast(y, tf.int32)


def spsa_gradient(
    model: Callable,
    x: tf.Tensor,
    y: tf.Tensor | None,
    *,
    delta: float = 0.01,
    samples: int = 128,
    loss: str = "cw",
    targeted: bool = False,
    seed: int | None = None,
    max_batch: int = 4096,
) -> tf.Tensor:
    """The SPSA estimate of the gradient of the attacker's objective.

    `g = 1/(n/2) sum_i (f(x + delta v_i) - f(x - delta v_i)) / (2 delta) v_i`
    over `n/2` Rademacher directions `v_i` (Uesato et al. 2018, arXiv
    1802.05666, Alg. 1), `f = loss` untargeted and `-loss` targeted; the
    model is only queried, never differentiated.

    Args:
        model: callable mapping `x` to logits `(batch, classes)`.
        x: float `(batch, height, width, channels)`; not modified.
        y: int `(batch,)` labels (targets when `targeted`); None uses the
            model's predictions (untargeted only).
        delta: finite-difference step, > 0, on the pixel scale of `x`.
        samples: queries per example, an even integer >= 2.
        loss: "cw" (logit margin `max_{j != y} z_j - z_y`) or "ce".
        targeted: estimate the gradient of `-loss(z, y)`.
        seed: int for reproducible draws; None uses the global generator.
        max_batch: images per model call, >= 1 (at least `2 * batch`).

    Returns:
        float32 tensor of the shape of `x`.

    Raises:
        ValueError: odd or too small `samples`, `delta <= 0`, `loss` not in
            ("ce", "cw"), bad `max_batch`, or `targeted=True` with `y=None`.

    Example:
        >>> g = spsa_gradient(model, x, y, samples=1024, seed=0)
    """
    _check(samples, delta, max_batch)
    primitives.validate(eps=0.0, loss=loss)
    primitives.check_inputs(x, y, -np.inf, np.inf, targeted=targeted)
    x32 = tf.cast(tf.convert_to_tensor(x), tf.float32)
    y = _labels(model, x32, y)
    key = tf.random.experimental.stateless_fold_in(_seed_tensor(seed), 1)
    return _ESTIMATE(model, x32, y, primitives.as_scalar(delta),
                     tf.constant(samples // 2, tf.int32),
                     tf.constant(int(max_batch), tf.int32), key,
                     -1.0 if targeted else 1.0, loss)


def _run(model, x32, y, *, eps, steps, step_size, delta, samples, norm,
         targeted, loss, rand_init, clip_min, clip_max, seed, early_stop,
         max_batch):
    """Alg. 1 from `x32` or a random start in the ball: `_LOOP` on tensor
    arguments; returns the best iterate per example, float32."""
    eps_t = primitives.as_scalar(eps)
    x_start = x32
    if rand_init:
        x_start = primitives.random_in_ball(x32, eps_t, norm,
                                            primitives.seed_pair(seed, 0))
    best = _LOOP(model, x32, y, x_start, eps_t,
                 primitives.as_scalar(step_size), primitives.as_scalar(delta),
                 tf.constant(samples // 2, tf.int32),
                 tf.constant(int(max_batch), tf.int32),
                 tf.constant(int(steps), tf.int32), _seed_tensor(seed),
                 primitives.as_scalar(clip_min),
                 primitives.as_scalar(clip_max), norm, bool(targeted), loss,
                 bool(early_stop))
    return best[0]


@register_attack("spsa")
def spsa(
    model: Callable, x: tf.Tensor, y: tf.Tensor | None, *, eps: float,
    steps: int = 100, step_size: float = 0.01, delta: float = 0.01,
    samples: int = 128, norm: str = "inf", targeted: bool = False,
    loss: str = "cw", rand_init: bool = False, clip_min: float = 0.0,
    clip_max: float = 1.0, seed: int | None = None, early_stop: bool = True,
    max_batch: int = 4096,
) -> tf.Tensor:
    """SPSA attack (Uesato et al. 2018, arXiv 1802.05666, Alg. 1).

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False`. Logits, never
            probabilities. Only queried, never differentiated.
        x: float `(batch, height, width, channels)` in `[clip_min, clip_max]`
            (default `[0, 1]`). Not modified.
        y: int `(batch,)`: true labels (untargeted) or target labels
            (`targeted=True`, required then). None (untargeted only) uses the
            model's predictions.
        eps: radius of the ball on the pixel scale of `x`, >= 0.
        steps: Adam iterations, >= 1; each costs `samples + 1` queries per
            example still attacked.
        step_size: Adam learning rate, > 0 (0.01 in the paper).
        delta: SPSA perturbation size, > 0 (0.01 in the paper).
        samples: queries per gradient estimate, an even integer >= 2
            (`samples / 2` antithetic Rademacher pairs; 128 by default).
        norm: "inf" (the paper's threat model) or "2" (the same Adam
            steps, projected onto the L2 ball; an extension).
        targeted: maximise `z_y - max_{j != y} z_j` (resp. minimise the
            cross-entropy) of the target `y`.
        loss: "cw" (the paper's margin loss on logits) or "ce".
        rand_init: start at a uniform random point of the eps-ball instead
            of `x`.
        clip_min, clip_max: the valid box of pixel values.
        seed: int for reproducible draws (Rademacher directions and random
            start); None uses the global generator.
        early_stop: stop querying an example once an iterate is adversarial.
        max_batch: images per model call, >= 1; the perturbed copies of a
            step are evaluated in chunks of about this size (never fewer
            than one pair per example, i.e. `2 * batch` images).

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box and with
        `||x_adv - x||_norm <= eps` (float tolerance): per example the best
        iterate `x_1..x_steps` (adversarial first, then higher objective).
        `eps = 0` returns `x`.

    Raises:
        ValueError: `norm` not in ("inf", "2"), `loss` not in ("ce", "cw"),
            `eps < 0`, `steps < 1`, `step_size <= 0`, `delta <= 0`,
            `samples` odd or < 2, `max_batch < 1`, `x` outside the box, or
            `targeted=True` with `y=None`; the message names the value.

    Example:
        >>> x_adv = spsa(model, x, y, eps=0.1, steps=100, seed=0)
    """
    primitives.validate(eps=eps, norm=norm, steps=steps, step_size=step_size,
                        loss=loss, clip_min=clip_min, clip_max=clip_max)
    _check(samples, delta, max_batch)
    primitives.check_inputs(x, y, clip_min, clip_max, targeted=targeted)
    x = tf.convert_to_tensor(x)
    if eps == 0:
        return tf.clip_by_value(x, clip_min, clip_max)
    x32 = tf.cast(x, tf.float32)
    y = _labels(model, x32, y)
    best = _run(model, x32, y, eps=eps, steps=steps, step_size=step_size,
                delta=delta, samples=samples, norm=norm, targeted=targeted,
                loss=loss, rand_init=rand_init, clip_min=clip_min,
                clip_max=clip_max, seed=seed, early_stop=early_stop,
                max_batch=max_batch)
    return tf.cast(best, x.dtype)
