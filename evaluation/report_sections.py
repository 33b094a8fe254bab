"""The optional sections of an `evaluate.py` report: gradient-masking sanity
checks with their curves, destruction rates and a transfer matrix.

Each function takes the first images of the test split as numpy arrays,
appends Markdown lines to `markdown` and returns the section's JSON-ready
result, so `evaluate.py` only reads its flags and calls them.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import keras
import numpy as np

#: Score-based attacks, compared against (not by) the white-box checks.
_SCORE_BASED = ("square", "spsa")


def first_examples(ds, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` images and labels of a batched dataset of `(x, y)`
    pairs (a `tf.data.Dataset`, a `keras.utils.PyDataset` or any iterable
    of array pairs), as numpy arrays (fewer if the dataset is shorter)."""
    xs, ys = [], []
    batches = (ds.as_numpy_iterator() if hasattr(ds, "as_numpy_iterator")
               else iter(ds))
    for x, y in batches:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        if sum(len(v) for v in ys) >= n:
            break
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def sanity_section(model, x: np.ndarray, y: np.ndarray, attack: dict,
                   path: pathlib.Path, markdown: list[str], *,
                   randomized: bool = False,
                   exact_model: Callable | None = None) -> dict:
    """Athalye, Carlini & Wagner 2018 (arXiv 1802.00420, Sec. 3.1) and
    Carlini et al. 2019 (arXiv 1902.06705, Sec. 5) gradient-masking checks.

    Fixed-budget gradient attacks get every check of
    `evaluation.sanity_checks.run_all` (eps and iteration curves, written
    as PNGs beside `path`, against Square-1000); minimum-norm and
    score-based attacks get the input-gradient check only.

    Args:
        model: callable on float32 `(batch, H, W, C)` in [0, 1] -> logits
            (the EOT model for randomized defenses).
        x, y: float32 images in [0, 1] and int labels `(n,)`.
        attack: the attack config (`attacks.from_config` form; `bpda`
            routes gradients through a straight-through copy).
        path: the report's JSON path; the plots are `<stem>_<curve>.png`.
        markdown: lines of the report's summary, appended to.
        randomized: `model` is a sampled-EOT model of a randomized defense.
            Square's accept/reject steps compare noisy loss estimates
            there and can stall far above the true robust accuracy
            (results/adaptive_demo/upsample2_square1000: 61.3% where
            PGD-EOT leaves 0.1%), so without `exact_model` the report says
            that the gradient-free comparison is weak.
        exact_model: the exact expectation of the randomized model
            (`attacks.exact_eot`), which Square then queries instead of the
            sampled one; accuracy is still scored with `model`.

    Returns:
        `{"checks": [...], "examples": n, "eps_curve"/"steps_curve": ...}`.
    """
    import attacks
    from evaluation import curves, sanity_checks

    gradient_based = (attack.get("eps") is not None
                      and attack["name"] not in curves.EXCLUDED
                      and attack["name"] not in _SCORE_BASED)
    if not gradient_based:
        out = {"checks": [sanity_checks.gradient_check(
            attacks.with_straight_through(model) if attack.get("bpda")
            else model, x, y)]}
    else:
        cfg = {k: v for k, v in attack.items() if k != "seed"}
        square = {"name": "square", "eps": attack["eps"],
                  "norm": attack.get("norm", "inf"), "steps": 1000}
        others = {"square-1000": square}
        if exact_model is not None:
            craft = attacks.from_config(square)
            others = {"square-1000 (exact expectation)":
                      lambda _, xb, yb: craft(exact_model, xb, yb)}
        out = sanity_checks.run_all(model, x, y, cfg, others=others)
    markdown += ["", f"### Gradient-masking sanity checks (first {len(y)} "
                 "images)", "", "```", sanity_checks.summary(out["checks"]),
                 "```"]
    if gradient_based and randomized and exact_model is None:
        markdown += ["", "Square queried the sampled-EOT model: on a "
                     "randomized defense its number is a weak upper bound, "
                     "so `whitebox_beats` is a weak check here."]
    for key, xlabel, log_x in (("eps_curve", "eps", False),
                               ("steps_curve", "steps", True)):
        curve = out.get(key)
        if not curve:
            continue
        png = path.with_name(f"{path.stem}_{key}.png")
        curves.plot_curve(curve[xlabel], curve["acc"], png, xlabel=xlabel,
                          ylabel="robust accuracy", log_x=log_x,
                          title=f"{path.stem}: accuracy vs {xlabel}")
        markdown += ["", f"![accuracy vs {xlabel}]({png.name})", "",
                     f"{xlabel}: {curve[xlabel]}  ",
                     f"accuracy: {[round(a, 4) for a in curve['acc']]}"]
    failed = [c.name for c in out["checks"] if not c.passed]
    if failed:
        print(f"WARNING: sanity checks failed: {failed} (see the report)")
    return {**out, "checks": [dataclasses.asdict(c) for c in out["checks"]],
            "examples": int(len(y))}


def destruction_section(model, x: np.ndarray, y: np.ndarray,
                        attack_fn: Callable, markdown: list[str]
                        ) -> list[dict]:
    """Destruction rates (Kurakin, Goodfellow & Bengio 2017, arXiv
    1607.02533, Sec. 3.1) of `evaluation.destruction_rate`'s default
    transformation grid on `attack_fn(model, x, y)`'s adversarial examples.
    Returns `destruction_table`'s rows."""
    from evaluation.destruction_rate import destruction_table

    x_adv = np.asarray(attack_fn(model, x, y))
    table = destruction_table(model, x, x_adv, y)
    markdown += ["", f"### Destruction rates ({len(y)} images)", "",
                 "| transform | params | rate | destroyed / fooled |",
                 "|---|---|---|---|"]
    markdown += [f"| {r['transform']} | {r['params']} | "
                 f"{'–' if r['rate'] is None else round(r['rate'], 3)} | "
                 f"{r['numerator']} / {r['denominator']} |" for r in table]
    return table


def transfer_section(model, others: list[str], x: np.ndarray, y: np.ndarray,
                     attack: dict, markdown: list[str]) -> dict:
    """This model and the `.keras` files `others`, each attacked (rows) and
    evaluated (columns) in the form of Szegedy et al. 2014 (arXiv
    1312.6199, Table 3): cells are error rates in %.

    Raises:
        ValueError: `others` is empty (a matrix needs a second model).
    """
    from evaluation.transfer_matrix import to_markdown, transfer_matrix

    if not others:
        raise ValueError("a transfer matrix needs other models "
                         "(--transfer_from); got none")
    nets = {"this model": model}
    for p in others:
        nets[p] = keras.saving.load_model(p)
    result = transfer_matrix(nets, x, y, {k: v for k, v in attack.items()
                                          if k not in ("seed", "bpda")})
    markdown += ["", "### Transfer matrix (error %)", "", to_markdown(result)]
    return result
