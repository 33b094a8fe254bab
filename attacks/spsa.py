"""SPSA: a score-based (gradient-free) attack with Adam on a finite-difference
gradient estimate.

Uesato, O'Donoghue, van den Oord, Kohli 2018, "Adversarial Risk and the
Dangers of Evaluating Against Weak Attacks", arXiv 1802.05666, Sec. 3.2 and
Alg. 1 (after Spall 1992's simultaneous perturbation stochastic
approximation). The model is only queried for logits; it is never
differentiated, so gradient masking (non-differentiable or
`stop_gradient` layers, shattered gradients) does not stop it.

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

from typing import Any, Callable

import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from core import backends

_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8
_INT31 = 2 ** 31 - 1


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


def _fold_in(key, data):
    """The stateless seed pair `(a draw keyed by key, data)`: one key per
    step / chunk, all derived from the attack's seed."""
    first = backends.stateless_uniform((), key, 0, _INT31, "int32")
    return ops.stack([first, ops.convert_to_tensor(data, "int32")])


def _objective(model, x, y, sign, loss, targeted):
    logits = primitives.call_model(model, x)
    obj = sign * primitives.per_example_loss(logits, y, loss)
    return obj, primitives.success(logits, y, targeted)


def _chunk(model, x, y, v, delta, sign, *, loss):
    """`sum_i (f(x + delta v_i) - f(x - delta v_i)) v_i` over the `k`
    directions `v` `(k, n, H, W, C)` of one chunk: one model call on the
    `2 k n` perturbed images (not clipped)."""
    k = ops.shape(v)[0]
    points = x[None] + delta * ops.concatenate([v, -v], 0)
    flat = ops.reshape(points, (-1,) + tuple(x.shape[1:]))
    logits = primitives.call_model(model, flat)
    obj = sign * primitives.per_example_loss(logits, ops.tile(y, (2 * k,)),
                                             loss)
    obj = ops.reshape(obj, (2, k, -1))
    diff = obj[0] - obj[1]  # (k, n)
    return ops.sum(diff[:, :, None, None, None] * v, axis=0)


_CHUNK = backends.compile_fn(_chunk, static_argnames=("loss",))


def _estimate(model, x, y, delta, pairs, max_batch, key, sign, loss):
    """The SPSA gradient of `sign * loss` at `x`, float32 like `x`.

    `pairs` antithetic Rademacher pairs per example, evaluated in model
    calls of at most `max(max_batch, 2 * batch)` images; the draws of chunk
    `j` use the seed `_fold_in(key, j)` (drawn here, outside the compiled
    model call).
    """
    n = int(x.shape[0])
    per = max(1, min(pairs, max_batch // max(2 * n, 1)))
    grad = ops.zeros_like(x)
    for j in range(-(-pairs // per)):
        k = min(per, pairs - j * per)
        bits = backends.stateless_uniform((k,) + tuple(x.shape),
                                          _fold_in(key, j), 0, 2, "int32")
        v = ops.cast(2 * bits - 1, "float32")  # (k, n, H, W, C)
        grad = grad + _CHUNK(model, x, y, v, delta, sign, loss=loss)
    return grad / (2.0 * delta * float(pairs))


def _adam_step(model, x0, xa, ya, g, m, v, t, eps, lr, lo, hi, *, norm,
               targeted, loss):
    """One projected Adam ascent step on the estimate `g` (moments `m`,
    `v`, step number `t`) and the query of the new iterate; returns
    `(x_new, m, v, attacker_objective, success)`."""
    sign = -1.0 if targeted else 1.0
    ma = _ADAM_B1 * m + (1.0 - _ADAM_B1) * g
    va = _ADAM_B2 * v + (1.0 - _ADAM_B2) * g * g
    m_hat = ma / (1.0 - ops.power(_ADAM_B1, t))
    v_hat = va / (1.0 - ops.power(_ADAM_B2, t))
    xa = xa + lr * m_hat / (ops.sqrt(v_hat) + _ADAM_EPS)
    xa = ops.clip(x0 + primitives.project(xa - x0, eps, norm), lo, hi)
    obj, succ = _objective(model, xa, ya, sign, loss, targeted)
    return xa, ma, va, obj, succ


_STATIC = ("norm", "targeted", "loss")
_LOOP = backends.compile_fn(_adam_step, static_argnames=_STATIC)


def _scatter(full, idx, part):
    """`full` with rows `idx` (int `(n,)`) replaced by `part`."""
    return ops.scatter_update(full, ops.reshape(idx, (-1, 1)), part)


def _spsa_loop(model, x, y, x_start, eps, lr, delta, pairs, max_batch, steps,
               seed, lo, hi, *, norm, targeted, loss, early_stop):
    """Alg. 1 for `steps` Adam steps from `x_start` (a host loop: each step
    queries only the examples still attacked, so the batch it compiles for
    shrinks); returns the best iterate per example `(x_best,
    attacker_objective, success)`."""
    sign = primitives.as_scalar(-1.0 if targeted else 1.0)
    batch = int(x.shape[0])
    x_adv = ops.clip(x + primitives.project(x_start - x, eps, norm), lo, hi)
    m, v = ops.zeros_like(x), ops.zeros_like(x)
    best = [x_adv, ops.full((batch,), -float("inf")),
            ops.zeros((batch,), "bool")]
    active = np.ones(batch, bool)
    static = dict(norm=norm, targeted=targeted, loss=loss)
    for t in range(1, steps + 1):
        idx = np.flatnonzero(active).astype("int32")
        if idx.size == 0:
            break
        rows = [ops.take(a, idx, axis=0) for a in (x, x_adv, y, m, v)]
        g = _estimate(model, rows[1], rows[2], delta, pairs, max_batch,
                      _fold_in(seed, t), sign, loss)
        xa, ma, va, obj, succ = _LOOP(
            model, rows[0], rows[1], rows[2], g, rows[3], rows[4],
            primitives.as_scalar(t), eps, lr, lo, hi, **static)
        old = [ops.take(b, idx, axis=0) for b in best]
        take = primitives.better(succ, obj, old[2], old[1])
        new = (primitives.select(take, xa, old[0]),
               ops.where(take, obj, old[1]), ops.where(take, succ, old[2]))
        best = [_scatter(b, idx, n) for b, n in zip(best, new)]
        x_adv, m, v = (_scatter(a, idx, n) for a, n in
                       ((x_adv, xa), (m, ma), (v, va)))
        if early_stop:
            active[idx] = ~ops.convert_to_numpy(succ)
    return tuple(best)


def _seed_tensor(seed):
    """int32 `(2,)` stateless seed; a fresh one from the global generator
    when `seed` is None."""
    if seed is None:
        return primitives.uniform((2,), None, 0, _INT31, "int32")
    return ops.convert_to_tensor([int(seed) % _INT31, 0], "int32")


def _labels(model, x32, y):
    """`y` as int32, or the model's predictions when it is None."""
    if y is None:
        y = primitives.default_labels(model, x32)
    return ops.cast(y, "int32")


def spsa_gradient(
    model: Callable,
    x: Any,
    y: Any | None,
    *,
    delta: float = 0.01,
    samples: int = 128,
    loss: str = "cw",
    targeted: bool = False,
    seed: int | None = None,
    max_batch: int = 4096,
) -> Any:
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
    x32 = ops.cast(ops.convert_to_tensor(x), "float32")
    y = _labels(model, x32, y)
    key = _fold_in(_seed_tensor(seed), 1)
    return _estimate(model, x32, y, primitives.as_scalar(delta),
                     samples // 2, int(max_batch), key,
                     primitives.as_scalar(-1.0 if targeted else 1.0), loss)


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
    best = _spsa_loop(model, x32, y, x_start, eps_t,
                      primitives.as_scalar(step_size),
                      primitives.as_scalar(delta), samples // 2,
                      int(max_batch), int(steps), _seed_tensor(seed),
                      primitives.as_scalar(clip_min),
                      primitives.as_scalar(clip_max), norm=norm,
                      targeted=bool(targeted), loss=loss,
                      early_stop=bool(early_stop))
    return best[0]


@register_attack("spsa")
def spsa(
    model: Callable, x: Any, y: Any | None, *, eps: float,
    steps: int = 100, step_size: float = 0.01, delta: float = 0.01,
    samples: int = 128, norm: str = "inf", targeted: bool = False,
    loss: str = "cw", rand_init: bool = False, clip_min: float = 0.0,
    clip_max: float = 1.0, seed: int | None = None, early_stop: bool = True,
    max_batch: int = 4096,
) -> Any:
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
    primitives.require_eager("spsa", x)
    x = ops.convert_to_tensor(x)
    if eps == 0:
        return ops.clip(x, clip_min, clip_max)
    x32 = ops.cast(x, "float32")
    y = _labels(model, x32, y)
    best = _run(model, x32, y, eps=eps, steps=steps, step_size=step_size,
                delta=delta, samples=samples, norm=norm, targeted=targeted,
                loss=loss, rand_init=rand_init, clip_min=clip_min,
                clip_max=clip_max, seed=seed, early_stop=early_stop,
                max_batch=max_batch)
    return ops.cast(best, x.dtype)
