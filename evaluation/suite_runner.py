"""Runs an attacker suite of `attacks.suites` over a dataset, resumably.

Every batch's per-image outcomes (clean correct; per attacker: correct,
target hit, perturbation norms) are appended as one JSON line to a log
file as soon as the batch is done. A killed evaluation rerun with the same
log continues after the last finished batch; the final numbers are computed
from the log, so a resumed run reports exactly what an uninterrupted one
would have (the random targets and starts are seeded per batch index).

The scoring rules are those of `attacks.suites` (per attacker, and
all-or-nothing: an image counts only if every attacker's version of it is
classified correctly).
"""

from __future__ import annotations

import inspect
import json
import pathlib
from typing import Any, Callable, Iterable, Sequence

import keras
import numpy as np
from keras import ops

import attacks
from attacks.suites import Attacker, Suite
from core import backends


class EnsembleLogits:
    """The mean logits of several models: the ensemble of Dong et al. 2018
    (arXiv 1710.06081, Eq. 8, logits fused with equal weights). Callable
    `x (batch, H, W, C) in [0, 1] -> (batch, classes)` float32."""

    def __init__(self, models: Sequence[Callable]):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = list(models)

    def __call__(self, x, training=False):
        logits = [ops.cast(m(x, training=training), "float32")
                  for m in self.models]
        total = logits[0]
        for z in logits[1:]:
            total = total + z
        return total / len(self.models)


def _labels(attacker: Attacker, y, logits, num_classes, seed, batch_index):
    """The label array given to the attack, and the target (or None)."""
    if attacker.target == "label":
        return y, None
    if attacker.target == "none":
        return None, None
    if attacker.target == "random":
        shift = backends.stateless_uniform(
            ops.shape(y), (seed, batch_index), 1, num_classes, dtype="int32")
        target = (y + shift) % num_classes
        return target, target
    # top_wrong: the rank-th most likely wrong class (AutoAttack's APGD-T);
    # top_k orders as a descending sort (ties: the lower class first)
    masked = ops.where(ops.one_hot(y, num_classes) > 0, -np.inf,
                       ops.cast(logits, "float32"))
    _, order = ops.top_k(masked, attacker.rank)
    target = ops.cast(order[:, attacker.rank - 1], "int32")
    return target, target


def _call_attack(fn, attacker, crafting_model, x, labels, y, seed):
    params = inspect.signature(
        attacks.get_attack(attacker.config["name"])).parameters
    kwargs = {}
    if attacker.config.get("targeted") and "y_true" in params:
        kwargs["y_true"] = y  # targeted APGD-DLR needs the true labels
    if "seed" in params and "seed" not in attacker.config:
        kwargs["seed"] = seed
    return fn(crafting_model, x, labels, **kwargs)


def _read_log(path: pathlib.Path, header: dict) -> dict[int, dict]:
    """Finished batches of a log, after checking that it belongs to the
    same evaluation (`header`)."""
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
    if not lines:
        return {}
    saved = json.loads(lines[0])
    if saved != header:
        raise ValueError(
            f"{path} is the log of another evaluation (model, data, suite or "
            "seed differ); remove it or choose another report path")
    done = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut off by the kill
            break
        done[record["batch"]] = record
    return done


def _open_log(log_path, suite: Suite, seed: int, identity: dict | None):
    """The log path (None without one) and its finished batches; writes the
    header of a new log."""
    header = json.loads(json.dumps({  # as read back (tuples -> lists)
        "suite": suite.to_json(), "seed": seed, "identity": identity or {}}))
    log = pathlib.Path(log_path) if log_path else None
    done = _read_log(log, header) if log else {}
    if log and not log.exists():
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps(header) + "\n")
    return log, done


def _batch_record(suite: Suite, fns, index, x, y, *, predict, attack_model,
                  ensemble, surrogates, num_classes, seed) -> dict:
    """Runs every attacker of `suite` on batch `index`; returns the batch's
    log record (per-image outcomes)."""
    x = ops.convert_to_tensor(x, "float32")
    y = ops.cast(ops.reshape(ops.convert_to_tensor(y), (-1,)), "int32")
    logits = predict(x)
    record = {"batch": index, "n": int(y.shape[0]),
              "clean": _correct(logits, y), "attackers": {}}
    for k, a in enumerate(suite.attackers):
        crafting = (attack_model if a.surrogate is None else ensemble
                    if a.surrogate == "ensemble" else
                    surrogates[a.surrogate])
        source_logits = logits if a.surrogate is None else crafting(x)
        labels, target = _labels(a, y, source_logits, num_classes, seed,
                                 index)
        # random starts seeded per (seed, batch, attacker): a resumed
        # run repeats exactly what an uninterrupted one would do
        x_adv = _call_attack(fns[a.label], a, crafting, x, labels, y,
                             seed=(seed * 1_000_003 + index) * 1009 + k)
        adv_logits = predict(x_adv)
        delta = ops.reshape(ops.cast(x_adv, "float32") - x,
                            (y.shape[0], -1))
        record["attackers"][a.label] = {
            "correct": _correct(adv_logits, y),
            "target_hit": None if target is None else
            _correct(adv_logits, target),
            "l2": np.round(ops.convert_to_numpy(ops.norm(delta, axis=1)),
                           5).tolist(),
            "linf": np.round(ops.convert_to_numpy(
                ops.max(ops.abs(delta), 1)), 6).tolist(),
        }
    return record


def run_suite(model: keras.Model, dataset: Iterable, suite: Suite, *,
              num_classes: int, surrogates: Sequence[Callable] = (),
              attack_model: Callable | None = None,
              predict: Callable | None = None, seed: int = 0,
              log_path: str | pathlib.Path | None = None,
              identity: dict | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Runs every attacker of `suite` on every batch of `dataset`.

    Args:
        model: the evaluated model, float32 `(batch, H, W, C)` in [0, 1]
            -> logits `(batch, num_classes)`.
        dataset: iterable of `(x, y)` batches, `y` int `(batch,)`, in a
            fixed order (resuming relies on it).
        suite: from `attacks.suites.get_suite`.
        num_classes: number of classes (random / top-wrong targets).
        surrogates: models the transfer attackers craft on.
        attack_model: what white-box attackers differentiate (default
            `model`; an `attacks.adaptive` BPDA/EOT model for defenses).
        predict: what accuracy is measured with (default `model`; the EOT
            expectation for randomized defenses).
        seed: seeds the random targets and starts, per batch.
        log_path: the JSON-lines log (None: no log, no resume).
        identity: JSON-able description of the evaluation (model path,
            dataset ...) stored in the log header; a log with another
            header is refused, never overwritten.
        progress: show a Keras progress bar.

    Returns:
        dict with `n`, `clean_acc`, `attackers` (label -> {accuracy,
        target_success_rate, success_rate, median_l2, max_linf, transfer,
        min_norm, config}), and for "all_or_nothing" suites
        `all_or_nothing_acc` (over the eps-ball attackers) and
        `min_attacker_acc`.

    Raises:
        ValueError: transfer attackers without surrogates, a foreign log.
    """
    if suite.needs_surrogates and not surrogates:
        raise ValueError(f"suite {suite.name!r} crafts on surrogate models; "
                         "give some (evaluate.py --transfer_from=a.keras,...)")
    attack_model = attack_model or model
    predict = predict or (lambda x: model(x, training=False))
    ensemble = EnsembleLogits(surrogates) if surrogates else None
    log, done = _open_log(log_path, suite, seed, identity)
    fns = {a.label: attacks.from_config(a.config) for a in suite.attackers}
    bar = None
    records = []
    for index, (x, y) in enumerate(dataset):
        if bar is None and progress:
            bar = keras.utils.Progbar(None, unit_name="batch")
        if index in done:
            records.append(done[index])
            continue
        record = _batch_record(
            suite, fns, index, x, y, predict=predict,
            attack_model=attack_model, ensemble=ensemble,
            surrogates=surrogates, num_classes=num_classes, seed=seed)
        if log:
            with log.open("a") as f:
                f.write(json.dumps(record) + "\n")
        records.append(record)
        if bar is not None:
            bar.update(index + 1)
    return summarize(suite, records)


def _correct(logits, labels) -> list[bool]:
    pred = ops.cast(ops.argmax(logits, -1), "int32")
    return ops.convert_to_numpy(
        ops.equal(pred, ops.cast(labels, "int32"))).tolist()


def summarize(suite: Suite, records: Sequence[dict]) -> dict[str, Any]:
    """The suite's numbers from per-batch records (see `run_suite`)."""
    clean = np.concatenate([r["clean"] for r in records]).astype(bool)
    n = int(clean.size)
    out: dict[str, Any] = {"suite": suite.name, "eps": suite.eps, "n": n,
                           "clean_acc": float(clean.mean()) if n else None,
                           "scoring": suite.scoring, "attackers": {}}
    all_correct = clean.copy()
    for a in suite.attackers:
        rows = [r["attackers"][a.label] for r in records]
        correct = np.concatenate([r["correct"] for r in rows]).astype(bool)
        l2 = np.concatenate([r["l2"] for r in rows])
        linf = np.concatenate([r["linf"] for r in rows])
        broken = clean & ~correct
        entry = {
            "config": a.config, "transfer": a.transfer,
            "min_norm": a.min_norm,
            # an image already misclassified clean counts as broken
            "accuracy": float((clean & correct).mean()),
            "success_rate": (float(broken.sum() / clean.sum())
                             if clean.any() else None),
            "median_l2": (float(np.median(l2[broken])) if broken.any()
                          else None),
            "max_linf": float(linf.max()) if linf.size else 0.0,
            "target_success_rate": None,
        }
        if rows and rows[0]["target_hit"] is not None:
            hits = np.concatenate([r["target_hit"] for r in rows])
            entry["target_success_rate"] = float(np.mean(hits))
        out["attackers"][a.label] = entry
        if not a.min_norm:
            all_correct &= correct
    ball = [v["accuracy"] for v in out["attackers"].values()
            if not v["min_norm"]]
    if suite.scoring == "all_or_nothing":
        out["all_or_nothing_acc"] = float(all_correct.mean()) if n else None
        out["min_attacker_acc"] = min(ball) if ball else None
    return out


def to_markdown(result: dict[str, Any]) -> str:
    """A Markdown table of a `run_suite` result."""
    lines = [f"### Suite `{result['suite']}` (L-inf eps "
             f"{result['eps']:.4f} = {255 * result['eps']:.1f}/255, "
             f"{result['n']} images)", "",
             f"Clean accuracy: {100 * result['clean_acc']:.2f}%", "",
             "| attacker | crafted on | accuracy (%) | success rate (%) | "
             "targeted success (%) | median L2 of successes |",
             "|---|---|---|---|---|---|"]

    def pct(v):
        return "–" if v is None else f"{100 * v:.2f}"

    for label, a in result["attackers"].items():
        where = "surrogates (transfer)" if a["transfer"] else "this model"
        kind = " (no eps ball)" if a["min_norm"] else ""
        l2 = "–" if a["median_l2"] is None else f"{a['median_l2']:.3f}"
        lines.append(f"| {label}{kind} | {where} | {pct(a['accuracy'])} | "
                     f"{pct(a['success_rate'])} | "
                     f"{pct(a['target_success_rate'])} | {l2} |")
    if "all_or_nothing_acc" in result:
        lines += ["", f"All-or-nothing accuracy (correct under every "
                  f"eps-ball attacker): "
                  f"**{pct(result['all_or_nothing_acc'])}%** (lowest single "
                  f"attacker: {pct(result['min_attacker_acc'])}%)"]
    return "\n".join(lines) + "\n"


__all__ = ["EnsembleLogits", "run_suite", "summarize", "to_markdown"]
