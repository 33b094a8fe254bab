"""One-pixel (few-pixel) attack by differential evolution (Su, Vargas,
Sakurai 2019, "One pixel attack for fooling deep neural networks", IEEE
Trans. Evolutionary Computation; arXiv 1710.08864, Sec. 3).

A black-box attack: it uses only the model's output probabilities, no
gradients. A candidate solution encodes `pixels` perturbed pixels, each as
`(row, col, value per channel)`; the candidate's image is `x` with those
pixels *replaced* by the values. Differential evolution (DE) searches the
candidates with the paper's settings (Sec. 3):

- population of `popsize` candidates (400 in the paper), initialised with
  rows and columns uniform over the image and values drawn as the paper's
  `N(128, 127)` on the 0-255 scale, i.e. `N(mid, 127/255 * (clip_max -
  clip_min))` around the middle of the box, clipped to the box;
- DE/rand/1 mutation `x_i(g+1) = x_r1(g) + F (x_r2(g) - x_r3(g))` with
  `F = mutation = 0.5`, `r1, r2, r3, i` pairwise distinct, and no
  crossover (every coordinate comes from the mutant);
- a child replaces its parent if its fitness is at least as good (the
  usual DE selection, Storn & Price 1997);
- at most `steps = 100` generations, with the paper's early stop per image
  (`early_stop="paper"`): targeted, once the target's probability exceeds
  90% (the paper's Kaggle CIFAR-10 criterion); untargeted, once the true
  class's probability is below 5% (its ImageNet criterion). The 90% could
  not be checked against the paper's text offline (some readings give 50%);
  `early_stop="success"` stops at the decision change instead.

Fitness is the softmax probability of the true class (untargeted,
minimised) or of the target (targeted, maximised), as in the paper. It is
computed as the log-probability (`log_softmax` of the logits): the same
ordering, but it still ranks candidates when float32 probabilities
saturate at 1.0 on a confident model.

Choices the paper leaves open: rows and columns are real numbers in
`[0, height)` / `[0, width)` floored to a pixel index; a mutant coordinate
outside that range is redrawn uniformly, a mutant value outside the box is
clipped to it.

Batching. SciPy's `differential_evolution` optimises one image at a time
and calls the model once per candidate (or once per generation with
`vectorized=True`). Here the DE bookkeeping is NumPy over all images at
once, `(images, popsize, pixels, 2 + channels)`, and one compiled function
builds the candidate images and evaluates them for the whole batch: each
generation costs `images * popsize / batch_size` model calls of
`batch_size` images, instead of `images * popsize` calls of one image.
Images that met the early-stop criterion drop out of later generations.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_attack
from attacks.cw import _for_compile
from core import backends

EARLY_STOPS = ("paper", "success", "none")
_TARGET_PROB = 0.9  # paper: targeted early stop, p_target > 90%
_TRUE_PROB = 0.05   # paper: untargeted early stop, p_true < 5%
_INIT_STD = 127.0 / 255.0  # paper: N(128, 127) on the 0-255 scale


def _label_log_prob(logits, labels):
    """`log softmax(logits)[labels]`, `(batch,)` float32."""
    logp = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    labels = ops.cast(labels, "int32")
    return ops.take_along_axis(logp, labels[:, None], axis=1)[:, 0]


def _apply(x, idx, rows, cols, vals):
    """The candidate images: `x[idx]` with pixel `(rows[:, j], cols[:, j])`
    set to `vals[:, j]` for each j (a later j wins on a repeated pixel)."""
    img = ops.take(x, idx, axis=0)
    height, width = ops.shape(x)[1], ops.shape(x)[2]

    def body(j, img):
        mask = (ops.equal(rows[:, j, None], ops.arange(height, dtype="int32")
                          )[:, :, None]
                & ops.equal(cols[:, j, None],
                            ops.arange(width, dtype="int32"))[:, None, :])
        return ops.where(mask[..., None], vals[:, j, None, None, :], img)

    return ops.fori_loop(0, ops.shape(rows)[1], body, img)


def _evaluate(model, x, idx, rows, cols, vals, labels):
    """Log-probability of `labels` and the prediction at each candidate."""
    logits = primitives.call_model(model, _apply(x, idx, rows, cols, vals))
    pred = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return _label_log_prob(logits, labels), pred


_EVALUATE = backends.compile_fn(_evaluate)


def _distinct_others(rng, shape, popsize):
    """Indices `(..., popsize, 3)`: for each member i, three members r1, r2,
    r3 drawn uniformly, pairwise distinct and distinct from i."""
    i = np.broadcast_to(np.arange(popsize), shape + (popsize,))
    picked = [i]
    for k in range(3):
        r = rng.integers(0, popsize - 1 - k, size=shape + (popsize,))
        # Skip the excluded indices in ascending order.
        for e in np.sort(np.stack(picked, -1), axis=-1).transpose(
                (-1,) + tuple(range(len(shape) + 1))):
            r = r + (r >= e)
        picked.append(r)
    return np.stack(picked[1:], -1)


def _validate(x, y, *, pixels, popsize, steps, mutation, early_stop,
              batch_size, clip_min, clip_max, targeted):
    """Raises ValueError for a bad argument of `one_pixel`; returns `x` as a
    tensor."""
    primitives.check_int("pixels", pixels)
    if isinstance(popsize, bool) or not isinstance(
            popsize, (int, np.integer)) or popsize < 4:
        raise ValueError(f"popsize must be an integer >= 4; got {popsize!r}")
    primitives.check_int("steps", steps)
    primitives.check_number("mutation", mutation, positive=True)
    if mutation > 2:
        raise ValueError(f"mutation must be in (0, 2]; got {mutation!r}")
    if early_stop not in EARLY_STOPS:
        raise ValueError(
            f"early_stop must be one of {EARLY_STOPS}; got {early_stop!r}")
    primitives.check_int("batch_size", batch_size)
    primitives.check_inputs(x, y, clip_min, clip_max, targeted=targeted)
    x = ops.convert_to_tensor(x)
    _, height, width, _ = (int(d) for d in x.shape)
    if pixels > height * width:
        raise ValueError(
            f"pixels must be at most height * width = {height * width}; "
            f"got {pixels!r}")
    return x


def _fitness(model, x32, y_np, sign, batch_size, pop, images):
    """Fitness and prediction of `pop[images]`, each `(len(images),
    popsize)`, evaluated in chunks of `batch_size` candidates."""
    popsize = pop.shape[1]
    flat = pop[images].reshape((-1,) + pop.shape[2:])
    idx = np.repeat(images, popsize).astype(np.int32)
    rows = np.floor(flat[:, :, 0]).astype(np.int32)
    cols = np.floor(flat[:, :, 1]).astype(np.int32)
    vals = flat[:, :, 2:].astype(np.float32)
    fit, pred = [], []
    for s in range(0, len(idx), batch_size):
        sl = slice(s, s + batch_size)
        logp, p = _EVALUATE(model, x32, ops.convert_to_tensor(idx[sl]),
                            ops.convert_to_tensor(rows[sl]),
                            ops.convert_to_tensor(cols[sl]),
                            ops.convert_to_tensor(vals[sl]),
                            ops.convert_to_tensor(y_np[idx[sl]]))
        fit.append(sign * ops.convert_to_numpy(logp))
        pred.append(ops.convert_to_numpy(p))
    shape = (len(images), popsize)
    return (np.concatenate(fit).reshape(shape),
            np.concatenate(pred).reshape(shape))


def _finished(fit, pred_pop, y_np, images, early_stop, targeted):
    """Whether the best member of each of `images` meets the early-stop
    criterion."""
    if early_stop == "none":
        return np.zeros(len(images), bool)
    best = np.argmin(fit[images], axis=1)
    if early_stop == "success":
        label = pred_pop[images, best]
        hit = label == y_np[images]
        return hit if targeted else ~hit
    logp = (-1.0 if targeted else 1.0) * fit[images, best]
    if targeted:
        return logp > np.log(_TARGET_PROB)
    return logp < np.log(_TRUE_PROB)


def _unperturbed(model, x32, y_np, sign, batch_size, targeted):
    """Fitness `(n,)` of the unperturbed images, and which of them are to be
    attacked (those that do not already succeed)."""
    n = int(x32.shape[0])
    logits = ops.concatenate(
        [primitives.call_model(model, x32[s:s + batch_size])
         for s in range(0, n, batch_size)], axis=0)
    fit_x = sign * ops.convert_to_numpy(
        _label_log_prob(logits, ops.convert_to_tensor(y_np)))
    pred_x = ops.convert_to_numpy(
        ops.cast(ops.argmax(logits, axis=-1), "int32"))
    active = (pred_x != y_np) if targeted else (pred_x == y_np)
    return fit_x, active


def _draw_coords(rng, size, span):
    """Rows and columns `size + (2,)`, uniform over the image."""
    return rng.uniform(0.0, 1.0, size=size + (2,)) * span


def _mutate(rng, pop, mutation, span, lo, hi):
    """DE/rand/1 children of every member of `pop`, drawn for every image
    (simple indexing); out-of-range coordinates are redrawn, values clipped
    to the box."""
    n, popsize = pop.shape[:2]
    r = _distinct_others(rng, (n,), popsize)
    parents = [np.take_along_axis(pop, r[:, :, k, None, None], axis=1)
               for k in range(3)]
    child = parents[0] + mutation * (parents[1] - parents[2])
    coords = child[..., :2]  # a view: redraw out-of-range coordinates
    bad = (coords < 0) | (coords >= span)
    coords[bad] = _draw_coords(rng, pop.shape[:3], span)[bad]
    child[..., 2:] = np.clip(child[..., 2:], lo, hi)
    return child


def _evolve(model, x, y, *, pixels, targeted, popsize, steps, mutation,
            early_stop, batch_size, clip_min, clip_max, seed):
    """The DE search for all images at once (module docstring).

    Returns:
        pop: the final population `(n, popsize, pixels, 2 + channels)`;
        fit: its fitness `(n, popsize)`, to minimise (`inf` for images that
            were not attacked);
        fit_x: the fitness `(n,)` of the unperturbed images.
    """
    x32 = ops.cast(x, "float32")
    if y is None:
        y = primitives.default_labels(model, x32)
    y_np = ops.convert_to_numpy(ops.cast(y, "int32"))
    model = _for_compile(model)
    # Fitness to minimise: log p_y (untargeted) or -log p_t (targeted).
    sign = -1.0 if targeted else 1.0
    # The unperturbed images: already-successful ones are left alone.
    fit_x, active = _unperturbed(model, x32, y_np, sign, batch_size, targeted)

    rng = np.random.default_rng(seed)
    lo, hi = float(clip_min), float(clip_max)
    n, height, width, channels = (int(d) for d in x.shape)
    span = np.array([height, width], np.float64)
    shape = (n, popsize, pixels)
    pop = np.concatenate([
        _draw_coords(rng, shape, span),
        np.clip(rng.normal((lo + hi) / 2, _INIT_STD * (hi - lo),
                           size=shape + (channels,)), lo, hi)], axis=-1)
    fit = np.full((n, popsize), np.inf)
    pred_pop = np.zeros((n, popsize), np.int32)
    images = np.flatnonzero(active)
    if len(images):
        fit[images], pred_pop[images] = _fitness(model, x32, y_np, sign,
                                                 batch_size, pop, images)
        active[images] = ~_finished(fit, pred_pop, y_np, images, early_stop,
                                    targeted)

    for _ in range(int(steps)):
        if not active.any():
            break
        # Only the active images are evaluated and updated.
        child = _mutate(rng, pop, mutation, span, lo, hi)
        images = np.flatnonzero(active)
        fit_child, pred_child = _fitness(model, x32, y_np, sign, batch_size,
                                         child, images)
        keep = fit_child <= fit[images]  # (active images, popsize)
        sub = pop[images]
        sub[keep] = child[images][keep]
        pop[images] = sub
        fit[images] = np.where(keep, fit_child, fit[images])
        pred_pop[images] = np.where(keep, pred_child, pred_pop[images])
        active[images] = ~_finished(fit, pred_pop, y_np, images, early_stop,
                                    targeted)
    return pop, fit, fit_x


def _assemble(x, pop, fit, fit_x, clip_min, clip_max):
    """`x` with the best member per image applied where it beats `x`, in the
    dtype of `x`."""
    n = pop.shape[0]
    best = pop[np.arange(n), np.argmin(fit, axis=1)]
    improve = fit.min(axis=1) < fit_x
    out = ops.convert_to_numpy(x).copy()
    for i in np.flatnonzero(improve):
        for row, col, *vals in best[i]:
            # The float32 values the model saw, kept inside the box.
            out[i, int(row), int(col), :] = np.clip(
                np.asarray(vals, np.float32).astype(out.dtype),
                clip_min, clip_max)
    return ops.convert_to_tensor(
        out, dtype=keras.backend.standardize_dtype(x.dtype))


@register_attack("one_pixel")
def one_pixel(
    model: Callable, x: Any, y: Any | None, *, pixels: int = 1,
    targeted: bool = False, popsize: int = 400, steps: int = 100,
    mutation: float = 0.5, early_stop: str = "paper", batch_size: int = 1024,
    clip_min: float = 0.0, clip_max: float = 1.0, seed: int | None = None,
) -> Any:
    """One-pixel attack by differential evolution (Su et al. 2019, arXiv
    1710.08864, Sec. 3).

    A black-box L0 attack: it changes at most `pixels` pixel locations (all
    channels of a location at once) and calls the model only forwards, at
    most `images * popsize * (steps + 1)` candidate images in all (8 million
    for 200 images with the paper's 400 x 100: a job for an accelerator).

    Args:
        model: callable mapping `x` to logits `(batch, classes)`; a Keras
            model is called with `training=False`. Logits, never
            probabilities (the fitness applies the softmax).
        x: float `(batch, height, width, channels)` in `[clip_min,
            clip_max]` (default `[0, 1]`). Not modified.
        y: int `(batch,)`: true labels (untargeted) or target labels
            (`targeted=True`). None uses the model's predictions
            (untargeted only).
        pixels: number of perturbed pixel locations per candidate, >= 1 and
            at most `height * width` (1, 3, 5 in the paper).
        targeted: maximise the probability of `y` instead of minimising it.
        popsize: candidate solutions per image, >= 4 (DE/rand/1 needs three
            members besides the parent); 400 in the paper.
        steps: DE generations after the initial population, >= 1; 100 in
            the paper.
        mutation: the DE scale factor `F`, in (0, 2]; 0.5 in the paper.
        early_stop: per image, stop evolving once
            "paper": the target's probability exceeds 0.9 (targeted) or
                the true class's probability is below 0.05 (untargeted);
            "success": the best candidate is classified as the target
                (targeted) or not as `y` (untargeted); cheaper, but the
                examples barely cross the decision boundary;
            "none": always run all `steps` generations.
        batch_size: candidate images per model call, >= 1.
        clip_min, clip_max: the valid box of pixel values.
        seed: int for a reproducible search (NumPy `default_rng(seed)`);
            None draws fresh entropy.

    Returns:
        `x_adv` with the shape and dtype of `x`, inside the box, differing
        from `x` in at most `pixels` pixel locations. Per image it is the
        best candidate of the final population (success or not) if its
        fitness is strictly better than that of `x`, else `x` itself, so
        the attack never makes the model more confident. Images that
        already succeed (misclassified when untargeted, classified as the
        target when targeted) are returned unchanged.

    Raises:
        ValueError: `pixels < 1` or more than `height * width`, `popsize <
            4`, `steps < 1`, `mutation` not in (0, 2], `early_stop` not in
            ("paper", "success", "none"), `batch_size < 1`, `clip_min >=
            clip_max`, `targeted=True` with `y=None`, or `x` not a rank-4
            float tensor inside the box; the message names the value.

    Example:
        >>> x_adv = one_pixel(model, x, y, pixels=1, popsize=400, steps=100)
    """
    x = _validate(x, y, pixels=pixels, popsize=popsize, steps=steps,
                  mutation=mutation, early_stop=early_stop,
                  batch_size=batch_size, clip_min=clip_min,
                  clip_max=clip_max, targeted=targeted)
    if x.shape[0] == 0:
        return ops.copy(x)
    pop, fit, fit_x = _evolve(
        model, x, y, pixels=pixels, targeted=targeted, popsize=popsize,
        steps=steps, mutation=mutation, early_stop=early_stop,
        batch_size=batch_size, clip_min=clip_min, clip_max=clip_max,
        seed=seed)
    # The best member per image, applied only where it beats x.
    return _assemble(x, pop, fit, fit_x, clip_min, clip_max)
