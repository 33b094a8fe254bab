"""Transferability matrix of adversarial examples between models.

Szegedy et al. 2014 (Table 3) crafted adversarial examples on each model
and measured every other model's error on them; the same table is the
black-box evaluation of Tramer et al. 2018 (Table 2). Here:

- rows: the *source* model the examples were crafted on (white-box),
- columns: the *target* model evaluated on them,
- cell `[i][j]`: the target's error rate on all `n` crafted examples,
  i.e. the fraction whose prediction differs from the true label (clean
  mistakes included, as in Szegedy's table),

so the diagonal is the white-box error and the off-diagonal cells are
transfer (black-box) errors, usually far lower. Each source crafts once;
all targets see the same examples.

References:
    Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow, Fergus 2014,
    "Intriguing properties of neural networks", arXiv 1312.6199, Sec. 4.2,
    Table 3 (cross-model generalization of adversarial examples).
    Tramer, Kurakin, Papernot, Goodfellow, Boneh, McDaniel 2018, "Ensemble
    Adversarial Training: Attacks and Defenses", arXiv 1705.07204, Table 2.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from evaluation.attack_labels import attack_label
from evaluation.curves import (bind_attack, check_arrays, check_batch_size,
                               logits)


def predict(model: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Predicted labels, int64 `(n,)`, of `model` on float `x` `(n, height,
    width, channels)` in [0, 1], in batches, with training=False."""
    return np.concatenate([
        np.argmax(np.asarray(logits(model, x[i:i + batch_size])), axis=-1)
        for i in range(0, len(x), batch_size)])


def craft(attack_fn: Callable, model: Callable, x: np.ndarray,
          y: np.ndarray, batch_size: int) -> np.ndarray:
    """`attack_fn(model, x, y)` in batches of `batch_size`, eagerly (every
    attack of `attacks`, `attacks.EAGER_ONLY` included); float32 `x_adv` of
    the shape of `x`."""
    return np.concatenate([
        np.asarray(attack_fn(model, x[i:i + batch_size],
                             y[i:i + batch_size]), np.float32)
        for i in range(0, len(x), batch_size)])


def _check_models(models: Any) -> list[str]:
    if not isinstance(models, Mapping) or len(models) < 1:
        raise ValueError("models must be a mapping of at least one name to a "
                         f"model; got {models!r}")
    for name, model in models.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"model names must be non-empty strings; got "
                             f"{name!r} in {list(models)}")
        if not callable(model):
            raise ValueError(f"models[{name!r}] must be a model (callable "
                             f"x -> logits); got {model!r}")
    return list(models)


def _num_classes(models: Mapping, names: list[str], x: np.ndarray) -> int:
    classes = {n: int(logits(models[n], x[:1]).shape[-1]) for n in names}
    if len(set(classes.values())) != 1:
        raise ValueError(f"all models must output the same number of "
                         f"classes; got {classes}")
    return classes[names[0]]


def transfer_matrix(models: Mapping[str, Callable], x: Any, y: Any,
                    attack_config: Mapping[str, Any], *,
                    batch_size: int = 500, seed: int = 0) -> dict[str, Any]:
    """Error rates of every target on the adversarial examples of every
    source (Szegedy et al. 2014, Table 3 form; module docstring).

    Args:
        models: `{name: model}`, at least one; each maps float32 images
            `(batch, height, width, channels)` in [0, 1] to logits
            `(batch, classes)` (Keras models are called with
            training=False); all with the same number of classes.
        x: float `(n, height, width, channels)` in [0, 1]; y: int `(n,)`
            true labels.
        attack_config: an attack config for `attacks.from_config`, e.g.
            `{"name": "pgd", "eps": 0.1, "step_size": 0.01, "steps": 20,
            "seed": 0}`; any attack works (minimum-norm ones too, as in
            Szegedy's L-BFGS table); `"bpda": True` crafts on each source's
            straight-through copy; `"targeted": True` aims at one random
            wrong label per image drawn with `seed`.
        batch_size: images per attack / model call, >= 1.
        seed: seed of the random target labels (targeted only).

    Returns:
        dict (JSON-serialisable): `names` (list of str, the row and column
        order), `error` (`[source][target]` floats in [0, 1]; diagonal =
        white-box), `clean_error` (`{name: float}`), `target_hit`
        (`[source][target]` fraction predicted as the target, or None when
        untargeted), `mean_l2` and `max_linf` (`{source: float}`, the
        perturbations' size), `n`, `attack` (the config).

    Raises:
        ValueError: no models, a non-string name or non-callable model,
            models with different class counts, bad `x`/`y` (rank, dtype,
            range, lengths), `batch_size < 1`, or a config without 'name'.
        KeyError / TypeError: unknown attack name / config key.

    Example:
        >>> r = transfer_matrix({"cnn": cnn, "linear": lin}, x, y,
        ...                     {"name": "pgd", "eps": 0.1,
        ...                      "step_size": 0.01, "steps": 20})
        >>> print(to_markdown(r))
    """
    names = _check_models(models)
    x, y = check_arrays(x, y)
    batch_size = check_batch_size(batch_size)
    if not isinstance(attack_config, Mapping) or "name" not in attack_config:
        raise ValueError(f"attack_config must be a dict with a 'name'; got "
                         f"{attack_config!r}")
    cfg = dict(attack_config)
    targeted = bool(cfg.get("targeted"))
    num_classes = _num_classes(models, names, x)
    labels = y
    if targeted:  # one random wrong label per image
        shift = np.random.default_rng(seed).integers(1, num_classes, len(y))
        labels = ((y + shift) % num_classes).astype(np.int32)
    clean = {n: float(np.mean(predict(models[n], x, batch_size) != y))
             for n in names}
    error, hit, mean_l2, max_linf = [], [], {}, {}
    for src in names:
        x_adv = craft(bind_attack(cfg, models[src]), models[src], x, labels,
                      batch_size)
        delta = (x_adv - x).reshape(len(x), -1)
        mean_l2[src] = float(np.mean(np.linalg.norm(delta, axis=1)))
        max_linf[src] = float(np.max(np.abs(delta)))
        preds = [predict(models[t], x_adv, batch_size) for t in names]
        error.append([float(np.mean(p != y)) for p in preds])
        hit.append([float(np.mean(p == labels)) for p in preds])
    return {"names": names, "error": error, "clean_error": clean,
            "target_hit": hit if targeted else None, "mean_l2": mean_l2,
            "max_linf": max_linf, "n": int(len(y)), "attack": cfg}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(result: Mapping[str, Any], *, digits: int = 1) -> str:
    """A Markdown table of a `transfer_matrix` result: error rates in %,
    rows = source, columns = target, the white-box diagonal in bold, a
    first row of clean errors and a last column of the sources' mean L2
    distortion (Szegedy et al. 2014, Table 3 layout).

    Raises:
        ValueError: `result` lacks a key of `transfer_matrix`'s result.
    """
    need = ("names", "error", "clean_error", "mean_l2", "n", "attack")
    missing = [k for k in need if k not in result]
    if missing:
        raise ValueError(f"not a transfer_matrix result: missing {missing}")

    names = result["names"]
    pct = lambda v: f"{100 * v:.{digits}f}"  # noqa: E731
    rows = [
        f"Error rate (%) of each target (column) on adversarial examples "
        f"crafted on each source (row), {attack_label(result['attack'])}, "
        f"n = {result['n']}; bold diagonal = white-box.",
        "",
        "| source \\ target | " + " | ".join(map(_cell, names))
        + " | mean L2 |",
        "|---" * (len(names) + 2) + "|",
        "| clean | " + " | ".join(pct(result["clean_error"][n])
                                  for n in names) + " | 0 |",
    ]
    for i, src in enumerate(names):
        cells = [f"**{pct(v)}**" if i == j else pct(v)
                 for j, v in enumerate(result["error"][i])]
        rows.append(f"| {_cell(src)} | " + " | ".join(cells)
                    + f" | {result['mean_l2'][src]:.3f} |")
    return "\n".join(rows)


__all__ = ["craft", "predict", "to_markdown", "transfer_matrix"]
