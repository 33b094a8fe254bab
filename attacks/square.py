"""Square Attack: score-based (gradient-free) random search, L-inf and L2.

Andriushchenko, Croce, Flammarion, Hein 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search", arXiv
1912.00049. The model is only queried for its logits; it is never
differentiated.

Alg. 1 (random search). Start from `x_best = init(x)`; at iteration `i`
sample a candidate `x_new = P(x_best + delta)`, `delta ~ D(eps, h_i)`, query
the model once and keep `x_new` per example only if its loss is lower:

    L(x_new) < L(x_best)  =>  x_best <- x_new

Examples that are already adversarial are not queried again. The loss is
the margin on the logits, untargeted `z_y - max_{j != y} z_j` (Sec. 3,
"margin loss"), or the cross-entropy, which the paper uses for the targeted
attack (`CE(z, t)`, minimised). The attack stops for an example once it is
misclassified (untargeted) or classified as the target (targeted).

Square side `h_i`. `p_i` is the fraction of pixels changed at iteration `i`:
`p_init`, halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
8000 of a 10000-query budget, the iterations rescaled linearly to the
budget `steps` (Sec. 4 and App. of the paper). `h_i = round(sqrt(p_i * H *
W))` (L-inf, >= 1), resp. the nearest odd integer >= 3 (L2).

Alg. 2 (L-inf). Init: vertical stripes of width one, each stripe's colour
drawn from `{-eps, +eps}^c` (Sec. 3.1). Update: a random window `W` of side
`h_i` is set to `x + rho_k` with `rho_k ~ U{-eps, +eps}` per channel `k`
(Alg. 2 adds `+-2 eps` and projects, which is the same for points at
vertices of the ball); a draw that would not change `x_best` is redrawn.

Alg. 3 (L2). `nu = x_best - x`; two random windows `W1`, `W2` of side `h`.
Per channel `k`:

    nu_tmp      = rho_k * eta* + nu_{W1,k} / ||nu_{W1,k}||_2,  rho_k ~ U{-1, 1}
    eps_avail_k = sqrt(||nu_{W1 u W2,k}||_2^2 + eps_unused^2 / c)
    nu_{W2,k} <- 0,   nu_{W1,k} <- nu_tmp / ||nu_tmp||_2 * eps_avail_k

with `eps_unused^2 = max(eps^2 - ||nu||_2^2, 0)`. `eta*` is the unit-norm
"meta" pattern of Eq. (5): the `h x h` window split into two halves of
`floor(h/2)` and `h - floor(h/2)` rows, each filled with the concentric
rectangles `eta_{r,s} = sum_{k=0}^{M(r,s)} 1 / (n + 1 - k)^2`
(`n = floor(h/2)`, `M = n - ` the Chebyshev distance to the half's centre),
normalised, the second half negated, and the whole transposed with
probability 1/2. Init: a grid of `floor(H/5)`-pixel tiles, each holding the
meta pattern with a random sign per channel, scaled to `||nu||_2 = eps`. The
candidate is projected onto the eps-ball (float round-off only) and clipped
to the box.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from core import backends

SQUARE_LOSSES = ("margin", "cw", "ce")
P_INIT_DEFAULT = {"inf": 0.8, "2": 0.1}
# Iterations (of a 10000-query budget) after which p is halved.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_REDRAWS = 3  # L-inf: redraws of a square that would not change x_best
_TINY = 1e-10
_INT31 = 2 ** 31 - 1


def p_schedule(p_init: float, iteration: int, steps: int) -> float:
    """The fraction `p_i` of pixels changed at random-search iteration `i`.

    `p_init` halved once for every threshold in (10, 50, 200, 500, 1000,
    2000, 4000, 6000, 8000) that `int(iteration / steps * 10000)` exceeds,
    i.e. the paper's schedule for 10000 queries rescaled to `steps`.

    Args:
        p_init: the initial fraction, in (0, 1].
        iteration: 0-based index of the random-search iteration.
        steps: the query budget per example.

    Returns:
        `p_init / 2**k`, `k` in 0..9.
    """
    it = int(iteration / steps * 10000)
    return p_init / 2 ** sum(it > t for t in _HALVINGS)


def side_lengths(p_init: float, steps: int, height: int, width: int,
                 norm: str) -> np.ndarray:
    """int32 `(steps - 1,)`: the square side `h_i` of every iteration.

    L-inf: `round(sqrt(p_i * H * W))` clipped to `[1, min(H, W)]`. L2: the
    same, at least 3 and made odd (the two halves of the meta pattern
    differ by one row), clipped to the largest odd side that fits.
    """
    limit = min(height, width)
    if norm == "2" and limit >= 3:
        limit -= 1 - limit % 2
    out = np.empty(max(steps - 1, 0), np.int32)
    for i in range(len(out)):
        s = int(round(math.sqrt(p_schedule(p_init, i, steps) * height
                                * width)))
        if norm == "2":
            s = max(s, 3)
            s += 1 - s % 2
        out[i] = min(max(s, 1), limit)
    return out


def _rings(rows: int, cols: int) -> np.ndarray:
    """Concentric rectangles of Eq. (5) on a `rows x cols` block, unit
    L2 norm: `sum_{j=d+1}^{n+1} 1/j^2`, `d` the Chebyshev distance to the
    centre `(rows // 2, cols // 2)`, `n = max(rows, cols) // 2`."""
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols))
    n = max(rows, cols) // 2
    dist = np.maximum(np.abs(np.arange(rows)[:, None] - rows // 2),
                      np.abs(np.arange(cols)[None, :] - cols // 2))
    inv_sq = 1.0 / np.arange(1, n + 2) ** 2  # 1/j^2 for j = 1..n+1
    tail = np.cumsum(inv_sq[::-1])[::-1]  # tail[d] = sum_{j=d+1}^{n+1}
    block = tail[dist]
    return block / np.linalg.norm(block)


def meta_pattern(side: int) -> np.ndarray:
    """float32 `(side, side)`: the unit-norm L2 update pattern `eta*` of
    Eq. (5): rings on the top `side // 2` rows, minus rings on the rest."""
    top = side // 2
    eta = np.concatenate([_rings(top, side), -_rings(side - top, side)], 0)
    return (eta / np.linalg.norm(eta)).astype(np.float32)


def _pattern_table(sides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct meta patterns zero-padded into `(levels, S, S)` and the
    level index `(steps - 1,)` of every iteration."""
    distinct = sorted(set(int(s) for s in sides)) or [1]
    big = max(distinct)
    table = np.zeros((len(distinct), big, big), np.float32)
    for k, s in enumerate(distinct):
        table[k, :s, :s] = meta_pattern(s)
    level = np.array([distinct.index(int(s)) for s in sides], np.int32)
    return table, level


def _fold_in(key, data):
    """The stateless seed pair `(a draw keyed by key, data)`: one key per
    random-search iteration, all derived from the restart's seed."""
    first = backends.stateless_uniform((), key, 0, _INT31, "int32")
    return ops.stack([first, ops.convert_to_tensor(data, "int32")])


def _split(key, num):
    """int32 `(num, 2)`: `num` independent seed pairs drawn from `key`."""
    return backends.stateless_uniform((num, 2), key, 0, _INT31, "int32")


def _sign(shape, key):
    """+-1 float32 Rademacher draws."""
    bits = backends.stateless_uniform(shape, key, 0, 2, "int32")
    return ops.cast(2 * bits - 1, "float32")


def _window(n, side, size, key):
    """Bool `(n, size)`: per example, `side` consecutive positions starting
    uniformly in `{0, ..., size - side}`; also returns the starts `(n,)`."""
    start = backends.stateless_uniform((n,), key, 0, size - side + 1,
                                       "int32")
    pos = ops.arange(size, dtype="int32")[None, :]
    return ops.logical_and(pos >= start[:, None],
                           pos < start[:, None] + side), start


def _square_mask(n, side, height, width, keys):
    """Float `(n, H, W, 1)` window mask and the window corners."""
    rows, r0 = _window(n, side, height, keys[0])
    cols, c0 = _window(n, side, width, keys[1])
    mask = ops.logical_and(rows[:, :, None], cols[:, None, :])
    return ops.cast(mask[..., None], "float32"), r0, c0


def _linf_init(x, eps, lo, hi, key):
    """Vertical stripes: one colour in {-eps, eps}^c per column."""
    signs = _sign((ops.shape(x)[0], 1, x.shape[2], x.shape[3]), key)
    return ops.clip(x + eps * signs, lo, hi)


def _linf_candidate(x, x_best, eps, side, lo, hi, key):
    """Alg. 2: a random square of x_best set to x +- eps per channel."""
    n, (height, width, chans) = ops.shape(x)[0], x.shape[1:]
    keys = _split(key, 3 + _REDRAWS)
    mask, _, _ = _square_mask(n, side, height, width, keys)
    sign_shape = (n, 1, 1, chans)

    def changes(signs):
        window = ops.clip(x + eps * signs, lo, hi)
        diff = ops.sum(ops.abs(window - x_best) * mask, axis=(1, 2, 3))
        return diff > 1e-7

    signs = _sign(sign_shape, keys[2])
    for k in range(_REDRAWS):  # redraw squares that would change nothing
        redraw = _sign(sign_shape, keys[3 + k])
        signs = primitives.select(changes(signs), signs, redraw)
    signs = primitives.select(changes(signs), signs, -signs)
    delta = ops.where(mask > 0, eps * signs, x_best - x)
    return ops.clip(x + delta, lo, hi)


def _place(table, level, side, r0, c0, height, width, transpose):
    """Float `(n, H, W, 1)`: the meta pattern of `side` at each example's
    window corner `(r0, c0)`, transposed where `transpose` (one-hot
    selections, so every value is copied exactly)."""
    eta = ops.take(table, level, axis=0)
    eta = ops.where(transpose[:, None, None], ops.transpose(eta)[None],
                    eta[None])  # (n, S, S)
    big = table.shape[1]
    li = ops.arange(height, dtype="int32")[None, :] - r0[:, None]  # (n, H)
    lj = ops.arange(width, dtype="int32")[None, :] - c0[:, None]
    pick_i = ops.one_hot(ops.clip(li, 0, big - 1), big)  # (n, H, S)
    pick_j = ops.one_hot(ops.clip(lj, 0, big - 1), big)  # (n, W, S)
    out = ops.einsum("nhs,nst,nwt->nhw", pick_i, eta, pick_j)
    inside = ops.logical_and(
        ops.logical_and(li >= 0, li < side)[:, :, None],
        ops.logical_and(lj >= 0, lj < side)[:, None, :])
    return ops.where(inside, out, 0.0)[..., None]


def _l2_init(x, eps, lo, hi, key):
    """Tiles of side floor(H/5) (at least 1), centred on the image, each
    with the meta pattern (transposed with probability 1/2) and a random
    sign per example and channel; scaled to L2 norm eps."""
    height, width, chans = x.shape[1:]
    tile = max(min(height, width) // 5, 1)
    nr, nc = height // tile, width // tile
    keys = _split(key, 2)
    k_sign, k_flip = keys[0], keys[1]
    eta = ops.convert_to_tensor(meta_pattern(tile))
    flip = backends.stateless_uniform((nr, nc), k_flip) < 0.5
    tiles = ops.where(flip[:, :, None, None], ops.transpose(eta)[None, None],
                      eta[None, None])  # (nr, nc, t, t)
    grid = ops.reshape(ops.transpose(tiles, (0, 2, 1, 3)),
                       (nr * tile, nc * tile))
    signs = _sign((ops.shape(x)[0], nr, nc, chans), k_sign)
    signs = ops.repeat(ops.repeat(signs, tile, axis=1), tile, axis=2)
    delta = signs * grid[None, :, :, None]
    top, left = (height - nr * tile) // 2, (width - nc * tile) // 2
    delta = ops.pad(delta, [[0, 0], [top, height - nr * tile - top],
                            [left, width - nc * tile - left], [0, 0]])
    norm = ops.sqrt(ops.sum(ops.square(delta), axis=(1, 2, 3),
                            keepdims=True))
    return ops.clip(x + eps * delta / ops.maximum(norm, _TINY), lo, hi)


def _window_norm(v):
    """Per example and channel L2 norm, `(n, 1, 1, C)`."""
    return ops.sqrt(ops.sum(ops.square(v), axis=(1, 2), keepdims=True))


def _l2_candidate(x, x_best, eps, side, table, level, lo, hi, key):
    """Alg. 3: move the perturbation mass of W1 u W2 (plus the unused
    budget) into W1, along the old W1 content plus a signed meta pattern."""
    n, (height, width, chans) = ops.shape(x)[0], x.shape[1:]
    keys = _split(key, 6)
    m1, r0, c0 = _square_mask(n, side, height, width, keys[0:2])
    m2, _, _ = _square_mask(n, side, height, width, keys[2:4])
    union = ops.maximum(m1, m2)
    nu = x_best - x
    unused2 = ops.maximum(
        eps ** 2 - ops.sum(ops.square(nu), axis=(1, 2, 3), keepdims=True),
        0.0)
    old = nu * m1 / (_window_norm(nu * m1) + _TINY)
    transpose = backends.stateless_uniform((n,), keys[4]) < 0.5
    eta = _place(table, level, side, r0, c0, height, width, transpose)
    rho = _sign((n, 1, 1, chans), keys[5])
    tmp = rho * eta + old
    avail = ops.sqrt(ops.square(_window_norm(nu * union))
                     + unused2 / float(chans))
    new_w1 = tmp / ops.maximum(_window_norm(tmp), _TINY) * avail
    nu_new = primitives.project(nu * (1.0 - union) + new_w1 * m1, eps, "2")
    return ops.clip(x + nu_new, lo, hi)


def _evaluate(model, x_adv, labels, *, targeted, loss):
    """`(signed loss (larger is better for the attacker), success)`."""
    base = "ce" if loss == "ce" else "cw"
    logits = primitives.call_model(model, x_adv)
    obj = (-1.0 if targeted else 1.0) * primitives.per_example_loss(
        logits, labels, base)
    return obj, primitives.success(logits, labels, targeted)


def _init(model, x, y, eps, key, lo, hi, *, norm, targeted, loss):
    """The initial point (Alg. 2 / 3 init) and its query: `(x_best,
    attacker_objective, success)`."""
    if norm == "inf":
        x_best = _linf_init(x, eps, lo, hi, key)
    else:
        x_best = _l2_init(x, eps, lo, hi, key)
    obj, succ = _evaluate(model, x_best, y, targeted=targeted, loss=loss)
    return x_best, obj, succ


def _search_step(model, x, x_best, y, obj, eps, side, level, table, key, lo,
                 hi, *, norm, targeted, loss):
    """One random-search iteration (Alg. 1) on the examples given: the
    candidate, its query, and per example the point of lower loss; returns
    `(x_best, attacker_objective, success of the candidate, taken)`."""
    if norm == "inf":
        x_new = _linf_candidate(x, x_best, eps, side, lo, hi, key)
    else:
        x_new = _l2_candidate(x, x_best, eps, side, table, level, lo, hi,
                              key)
    obj_new, succ_new = _evaluate(model, x_new, y, targeted=targeted,
                                  loss=loss)
    take = obj_new > obj
    return (primitives.select(take, x_new, x_best),
            ops.where(take, obj_new, obj), succ_new, take)


_STATIC = ("norm", "targeted", "loss")
_INIT = backends.compile_fn(_init, static_argnames=_STATIC)
_LOOP = backends.compile_fn(_search_step, static_argnames=_STATIC)


def _scatter(full, idx, part):
    """`full` with rows `idx` (int `(n,)`) replaced by `part`."""
    return ops.scatter_update(full, ops.reshape(idx, (-1, 1)), part)


def _square_loop(model, x, y, eps, sides, levels, table, seed, lo, hi, *,
                 norm, targeted, loss):
    """Alg. 1 for `len(sides) + 1` queries per example; returns the final
    `(x_best, attacker_objective, success)` per example. `objective` is the
    signed loss (larger is better for the attacker). A host loop: every
    iteration queries only the examples not yet adversarial."""
    static = dict(norm=norm, targeted=targeted, loss=loss)
    x_best, obj, succ = _INIT(model, x, y, eps, _fold_in(seed, 0), lo, hi,
                              **static)
    for i in range(len(sides)):
        succ_np = ops.convert_to_numpy(succ)
        idx = np.flatnonzero(~succ_np).astype("int32")
        if idx.size == 0:
            break
        rows = [ops.take(a, idx, axis=0) for a in (x, x_best, y, obj, succ)]
        xb, ob, succ_new, take = _LOOP(
            model, rows[0], rows[1], rows[2], rows[3], eps,
            ops.convert_to_tensor(int(sides[i]), "int32"),
            ops.convert_to_tensor(int(levels[i]), "int32"), table,
            _fold_in(seed, i + 1), lo, hi, **static)
        x_best = _scatter(x_best, idx, xb)
        obj = _scatter(obj, idx, ob)
        succ = _scatter(succ, idx, ops.where(take, succ_new, rows[4]))
    return x_best, obj, succ


def _seed_tensor(seed, restart):
    """int32 `(2,)` stateless seed; a fresh one from the global generator
    when `seed` is None."""
    if seed is None:
        return primitives.uniform((2,), None, 0, _INT31, "int32")
    return ops.convert_to_tensor([int(seed) % _INT31, int(restart)],
                                 "int32")


def _check_args(x, y, eps, norm, steps, p_init, loss, targeted, restarts,
                clip_min, clip_max):
    """Validates the arguments of `square` and the inputs; returns the
    effective `(loss, p_init)` (defaults resolved)."""
    if loss is None:
        loss = "ce" if targeted else "margin"
    if loss not in SQUARE_LOSSES:
        raise ValueError(
            f"loss must be one of {SQUARE_LOSSES}; got {loss!r}")
    primitives.validate(eps=eps, norm=norm, steps=steps, restarts=restarts,
                        clip_min=clip_min, clip_max=clip_max)
    if p_init is None:
        p_init = P_INIT_DEFAULT[norm]
    if (isinstance(p_init, bool) or not np.isscalar(p_init)
            or not (np.isfinite(p_init) and 0.0 < p_init <= 1.0)):
        raise ValueError(f"p_init must be a number in (0, 1]; got {p_init!r}")
    primitives.check_inputs(x, y, clip_min, clip_max, targeted=targeted)
    primitives.require_eager("square", x)
    return loss, p_init


def _restarts(model, x, y, *, eps, norm, steps, p_init, loss, targeted,
              restarts, box, seed):
    """Runs `_square_loop` once per restart, later ones only on the
    examples not yet adversarial; returns the per-example best `x_adv`
    (float32)."""
    clip_min, clip_max = box
    x32 = ops.cast(x, "float32")
    if y is None:
        y = primitives.default_labels(model, x32)
    y = ops.cast(y, "int32")
    height, width = int(x.shape[1]), int(x.shape[2])
    sides = side_lengths(float(p_init), int(steps), height, width, norm)
    table, levels = _pattern_table(sides)
    args = (primitives.as_scalar(eps), sides, levels,
            ops.convert_to_tensor(table))
    lo, hi = primitives.as_scalar(clip_min), primitives.as_scalar(clip_max)
    static = dict(norm=norm, targeted=bool(targeted), loss=loss)
    best = None
    for r in range(int(restarts)):
        seed_r = _seed_tensor(seed, r)
        if best is None:
            best = _square_loop(model, x32, y, *args, seed_r, lo, hi,
                                **static)
            continue
        idx = np.flatnonzero(~ops.convert_to_numpy(best[2])).astype("int32")
        if idx.size == 0:
            break
        run = _square_loop(model, ops.take(x32, idx, axis=0),
                           ops.take(y, idx, axis=0), *args, seed_r, lo, hi,
                           **static)
        old = [ops.take(b, idx, axis=0) for b in best]
        worse = primitives.better(run[2], run[1], old[2], old[1])
        best = tuple(_scatter(b, idx, primitives.select(worse, new, prev))
                     for b, new, prev in zip(best, run, old))
    return best[0]


@register_attack("square")
def square(
    model: Callable,
    x: Any,
    y: Any | None,
    *,
    eps: float,
    norm: str = "inf",
    steps: int = 1000,
    p_init: float | None = None,
    loss: str | None = None,
    targeted: bool = False,
    restarts: int = 1,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int | None = None,
) -> Any:
    """Square Attack (Andriushchenko et al. 2020, arXiv 1912.00049, Alg. 1-3).

    Score-based: the model is queried for logits only (inside a compiled
    function), never differentiated, so it also attacks non-differentiable
    models (quantised inputs, `stop_gradient`).

    Args:
        model: callable mapping `x` to logits (never probabilities)
            `(batch, classes)`; a Keras model is called with `training=False`.
        x: float `(batch, height, width, channels)` in `[clip_min, clip_max]`
            (default `[0, 1]`). Not modified.
        y: int `(batch,)`: true labels (untargeted) or target labels
            (`targeted=True`, required then). None (untargeted only) uses the
            model's predictions.
        eps: radius of the ball on the pixel scale of `x`, >= 0.
        norm: "inf" (Alg. 2) or "2" (Alg. 3).
        steps: query budget per example and restart, >= 1: one query for the
            initialisation and `steps - 1` random-search iterations. Examples
            already adversarial are not queried again.
        p_init: initial fraction of pixels changed per iteration, in (0, 1],
            halved on the schedule of `p_schedule`. None: 0.8 for L-inf (for
            small images such as MNIST; the paper uses 0.05 on ImageNet), 0.1
            for L2 (the paper's ImageNet L2 value).
        loss: "margin" (alias "cw"): the logit margin, untargeted
            `z_y - max_{j != y} z_j`, targeted `max_{j != t} z_j - z_t`; or
            "ce": cross-entropy (maximised untargeted, minimised targeted).
            None (default): the paper's choices, "margin" untargeted and "ce"
            targeted.
        targeted: drive the prediction to the target `y`.
        restarts: independent runs (seeds `(seed, r)`); runs after the first
            attack only the examples not yet adversarial, and per example the
            worst case for the model is kept.
        clip_min, clip_max: the valid box of pixel values.
        seed: int for reproducible draws; None draws the stateless seeds
            from the global generator.

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box and with
        `||x_adv - x||_norm <= eps` (float tolerance): per example the
        accepted point of lowest loss (adversarial ones first across
        restarts). `eps = 0` returns `x`.

    Raises:
        ValueError: `norm` not in ("inf", "2"), `loss` not in ("margin",
            "cw", "ce"), `eps < 0`, `steps < 1`, `restarts < 1`, `p_init`
            outside (0, 1], `x` outside the box, or `targeted=True` with
            `y=None`; the message names the value and the accepted ones.

    Example:
        >>> x_adv = square(model, x, y, eps=0.1, steps=500, seed=0)
    """
    loss, p_init = _check_args(x, y, eps, norm, steps, p_init, loss, targeted,
                               restarts, clip_min, clip_max)
    x = ops.convert_to_tensor(x)
    if eps == 0:
        return ops.clip(x, clip_min, clip_max)
    x_best = _restarts(model, x, y, eps=eps, norm=norm, steps=steps,
                       p_init=p_init, loss=loss, targeted=targeted,
                       restarts=restarts, box=(clip_min, clip_max), seed=seed)
    return ops.cast(x_best, x.dtype)
