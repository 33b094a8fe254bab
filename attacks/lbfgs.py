"""Box-constrained L-BFGS attack (Szegedy, Zaremba, Sutskever, Bruna, Erhan,
Goodfellow, Fergus 2014, "Intriguing properties of neural networks", arXiv
1312.6199, Sec. 4.1).

The paper finds an adversarial example for the target label `l` by solving

    minimize  c * |r| + loss_f(x + r, l)   subject to  x + r in [0, 1]^m

with box-constrained L-BFGS, and a line search over `c`: it looks for the
value of `c` at which the minimiser `r` still satisfies `f(x + r) = l`.
This module implements that recipe with these choices:

- `|r|` is the *squared* L2 norm `||r||_2^2` (smooth at `r = 0`, so the
  quasi-Newton model stays valid; the paper's Sec. 4.1 uses the L2
  distance). The penalty and its gradient `2 c r` are computed exactly in
  float64 on the SciPy side; only `loss_f` and its input gradient come from
  the model.
- `loss_f` is the softmax cross-entropy of the target label (targeted, the
  paper's setting). Untargeted (`targeted=False`, the library's default)
  uses `-log(1 - p_y)`, the cross-entropy of the event "not the true class
  `y`": bounded below by 0, smooth, and for two classes exactly the
  targeted loss of the other class.
- The optimiser is SciPy's L-BFGS-B on the adversarial image `z = x + r`
  with the bounds `[clip_min, clip_max]` per pixel, started at `x`. A
  batch (or each chunk of `batch_size` examples) is solved as *one*
  flattened problem whose objective is the sum of the per-example
  objectives. That sum is separable, so its exact minimiser is the set of
  per-example minimisers; the shared L-BFGS memory and line search only
  couple how fast each example gets there. One model call then evaluates
  the value and gradient for the whole chunk, instead of one call per
  example and iteration; `batch_size=1` gives the strictly per-example
  problem of the paper. The value-and-gradient function is compiled
  (`backends.compile_fn`) and fed tensors of a fixed shape, so it traces
  once per chunk shape.
- The line search over `c`: larger `c` weighs the distance more and gives
  smaller `r`, so the smallest perturbation belongs to the *largest* `c`
  whose minimiser is still classified as `l` (the paper's text says
  "minimum c > 0"; with its objective written as `c |r| + loss_f` only
  the largest such `c` gives the minimal distortion it reports). Per
  example, `c` starts at `c_init`, is multiplied by 10 while the minimiser
  succeeds and divided by 10 while it fails, and once it is bracketed it is
  bisected geometrically (`sqrt(lo * hi)`, as `c` spans decades). A run at
  `c` counts as a success when its final L-BFGS-B point is classified as
  the target (untargeted: not as `y`).
- Every point at which the model is evaluated is a candidate: the
  successful point of smallest L2 over all evaluations and all values of
  `c` is returned (as `attacks.cw.cw_l2` does). Examples never broken are
  returned unchanged, bit for bit.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.optimize
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from attacks.cw import _for_compile, _value_and_grad
from core import backends


def _model_loss(model, x_adv, y, *, targeted):
    """Per-example `loss_f` `(batch,)`, the gradient of its sum with
    respect to `x_adv`, and success `(batch,)` at `x_adv`."""

    def objective(x_in):
        logits = ops.cast(primitives.call_model(model, x_in), "float32")
        if targeted:
            loss = ops.sparse_categorical_crossentropy(y, logits,
                                                       from_logits=True)
        else:
            # -log(1 - p_y) = logsumexp(z) - logsumexp_{j != y}(z).
            onehot = ops.one_hot(y, logits.shape[-1], dtype=logits.dtype)
            loss = (ops.logsumexp(logits, axis=-1)
                    - ops.logsumexp(logits - 1e9 * onehot, axis=-1))
        return ops.sum(loss), (logits, loss)

    _, (logits, loss), grad = _value_and_grad(objective, x_adv)
    return loss, grad, primitives.success(logits, y, targeted)


_LOSS = backends.compile_fn(_model_loss, static_argnames=("targeted",))


class _Chunk:
    """One flattened L-BFGS-B problem over a chunk of examples; remembers
    the successful point of smallest L2 among all evaluated points."""

    def __init__(self, model, x32, y, targeted, lo, hi):
        self.model, self.y, self.targeted = model, y, targeted
        self.shape = x32.shape
        self.n = x32.shape[0]
        self.x32 = x32
        self.x64 = x32.reshape(self.n, -1).astype(np.float64)
        self.x0 = self.x64.ravel().copy()
        size = self.x0.size
        self.bounds = scipy.optimize.Bounds(np.full(size, lo),
                                            np.full(size, hi))
        self.best_l2 = np.full(self.n, np.inf)
        self.best_x = x32.copy()
        self.const = None

    def fun(self, z):
        """Objective `sum_i c_i ||z_i - x_i||^2 + loss_f(z_i)` and its
        gradient, both float64 for SciPy."""
        z32 = z.reshape(self.shape).astype(np.float32)
        loss, grad, succ = _LOSS(self.model, ops.convert_to_tensor(z32),
                                 self.y, targeted=self.targeted)
        loss = ops.convert_to_numpy(loss).astype(np.float64)
        succ = ops.convert_to_numpy(succ)
        # The point actually fed to the model is z32: record its L2.
        l2 = np.sum(np.square(
            (z32 - self.x32).reshape(self.n, -1).astype(np.float64)), axis=1)
        take = succ & (l2 < self.best_l2)
        self.best_l2[take] = l2[take]
        self.best_x[take] = z32[take]
        r = z.reshape(self.n, -1) - self.x64
        value = np.sum(self.const * np.sum(r * r, axis=1) + loss)
        g = 2.0 * self.const[:, None] * r \
            + ops.convert_to_numpy(grad).reshape(self.n, -1).astype(
                np.float64)
        self._last_succ = succ
        return value, g.ravel()

    def run(self, const, steps):
        """Minimises for the constants `const` `(n,)`; returns whether each
        example's final L-BFGS-B point succeeds."""
        self.const = const
        res = scipy.optimize.minimize(
            self.fun, self.x0, jac=True, method="L-BFGS-B",
            bounds=self.bounds,
            options={"maxiter": int(steps),
                     "maxfun": 3 * int(steps) + 10})
        # The final point's success (evaluated once more: L-BFGS-B's last
        # evaluation need not be its returned point).
        self.fun(res.x)
        return self._last_succ.copy()


def _check_args(c_init, binary_search_steps, steps, batch_size):
    """Raises ValueError for a bad scalar argument of `lbfgs`."""
    primitives.check_number("c_init", c_init, positive=True)
    primitives.check_int("binary_search_steps", binary_search_steps)
    primitives.check_int("steps", steps)
    if batch_size is not None:
        primitives.check_int("batch_size", batch_size)


def _line_search(model, x32, y, batch, *, targeted, c_init,
                 binary_search_steps, steps, batch_size, clip_min, clip_max):
    """The per-example search over `c` of the module docstring, one
    L-BFGS-B run per chunk and value of `c`.

    Returns:
        best_x: float32 NumPy array, the successful point of smallest L2
            (`x` where none);
        best_l2: `(batch,)`, its squared L2 (`inf` where none).
    """
    x_np = ops.convert_to_numpy(x32)
    y_np = ops.convert_to_numpy(y)
    size = batch if batch_size is None else int(batch_size)
    model = _for_compile(model)
    chunks = [
        _Chunk(model, x_np[i:i + size],
               ops.convert_to_tensor(y_np[i:i + size]),
               bool(targeted), float(clip_min), float(clip_max))
        for i in range(0, batch, size)
    ]
    const = np.full(batch, float(c_init), np.float64)
    lower = np.zeros(batch, np.float64)      # largest c that succeeded
    upper = np.full(batch, np.inf, np.float64)  # smallest c that failed
    for _ in range(int(binary_search_steps)):
        succ = np.concatenate([
            ch.run(const[i * size:i * size + ch.n], steps)
            for i, ch in enumerate(chunks)])
        lower = np.where(succ, np.maximum(lower, const), lower)
        upper = np.where(succ, upper, np.minimum(upper, const))
        const = np.where(
            np.isfinite(upper) & (lower > 0), np.sqrt(lower * upper),
            np.where(succ, const * 10.0, const / 10.0))
    return (np.concatenate([ch.best_x for ch in chunks]),
            np.concatenate([ch.best_l2 for ch in chunks]))


def _finish(x, x32, best_x, best_l2, eps, clip_min, clip_max):
    """`x_adv` in the dtype of `x`: the best point, projected onto the
    `eps` ball when given; `x` itself, bit for bit, where none was found."""
    found = ops.reshape(ops.convert_to_tensor(np.isfinite(best_l2)),
                        (-1, 1, 1, 1))
    x_adv = ops.convert_to_tensor(best_x)
    if eps is not None:
        delta = primitives.project(x_adv - x32, primitives.as_scalar(eps), "2")
        x_adv = x32 + delta
    out = ops.clip(ops.cast(x_adv, x.dtype), ops.cast(clip_min, x.dtype),
                   ops.cast(clip_max, x.dtype))
    # Failures are x itself, bit for bit (not a float32 round trip).
    return ops.where(found, out, x)


@register_attack("lbfgs")
def lbfgs(
    model: Callable, x: Any, y: Any | None, *,
    targeted: bool = False, c_init: float = 1.0, binary_search_steps: int = 8,
    steps: int = 100, batch_size: int | None = None, clip_min: float = 0.0,
    clip_max: float = 1.0, eps: float | None = None, seed: int | None = None,
) -> Any:
    """Box-constrained L-BFGS attack (Szegedy et al. 2014, arXiv 1312.6199,
    Sec. 4.1).

    A minimum-norm attack: it has no eps-ball of its own; it returns, per
    example, the smallest-L2 adversarial example it found.

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False`. Logits, never
            probabilities (the loss applies the softmax).
        x: float `(batch, height, width, channels)` in `[clip_min,
            clip_max]` (default `[0, 1]`). Not modified.
        y: int `(batch,)`: target labels (`targeted=True`, the paper's
            setting) or true labels (untargeted). None uses the model's
            predictions (untargeted only).
        targeted: reach the label `y` (loss: cross-entropy of `y`) instead
            of leaving it (loss: `-log(1 - p_y)`). Defaults to False like
            every attack of the library, so that true labels never make it
            a no-op; pass `targeted=True` for the paper's attack.
        c_init: first value of the distance weight `c` > 0 in
            `c * ||r||_2^2 + loss_f(x + r)`. About the gradient norm of the
            loss over twice the expected L2 distance; 1.0 suits [0, 1]
            images of MNIST / CIFAR size. A poor guess costs search steps
            (x10 or /10 each), not correctness.
        binary_search_steps: values of `c` tried per example, >= 1 (x10 /
            /10 until bracketed, then geometric bisection).
        steps: L-BFGS-B iterations per value of `c` (SciPy's `maxiter`),
            >= 1; function evaluations are capped at `3 * steps + 10`.
        batch_size: examples solved together as one flattened L-BFGS-B
            problem (see the module docstring), >= 1; None (default) solves
            the whole batch at once; 1 solves each example on its own.
        clip_min, clip_max: the valid box of pixel values (L-BFGS-B bounds).
        eps: optional L2 radius >= 0. If given, each returned perturbation
            is projected onto the L2 ball of radius `eps` at the end (a
            projected example may no longer be adversarial). None (default)
            returns the minimum-norm result.
        seed: accepted for API uniformity; the attack is deterministic (it
            starts at `x`) and ignores it.

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box. For every
        example where some evaluated point succeeded (classified as the
        target, or not as `y` when untargeted) it is the successful point
        of smallest L2; an input that already succeeds is returned as is
        (L2 = 0); examples never broken are `x` itself, bit for bit.

    Raises:
        ValueError: `c_init <= 0`, `binary_search_steps < 1`,
            `steps < 1`, `batch_size < 1`, `eps < 0`, `clip_min >=
            clip_max`, `targeted=True` with `y=None`, or `x` not a rank-4
            float tensor inside the box; the message names the value.

    Example:
        >>> x_adv = lbfgs(model, x, target, targeted=True,
        ...               binary_search_steps=8, steps=100)
    """
    _check_args(c_init, binary_search_steps, steps, batch_size)
    x, x32, y, batch = primitives.prepare_min_norm(
        model, x, y, eps=eps, clip_min=clip_min, clip_max=clip_max,
        targeted=targeted)
    del seed  # deterministic attack
    if batch == 0:
        return ops.copy(x)
    best_x, best_l2 = _line_search(
        model, x32, y, batch, targeted=targeted, c_init=c_init,
        binary_search_steps=binary_search_steps, steps=steps,
        batch_size=batch_size, clip_min=clip_min, clip_max=clip_max)
    return _finish(x, x32, best_x, best_l2, eps, clip_min, clip_max)
