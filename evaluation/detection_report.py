"""evaluate.py's detection mode: the naive and the adaptive attack on a
detection system, side by side, as JSON, Markdown and two plots.

- The NAIVE attack (flagged in every output) is the defense-unaware one of
  the detection papers: the recipe's `naive_attack` (C&W L2 by default) on
  the undefended classifier (`system.components["base"]`, else the system's
  classifier), its output then shown to the full system.
- The ADAPTIVE attack is the recipe's `adaptive_attack`, a
  detection-system attack (`attacks.list_system_attacks()`) that knows
  every detector: `detector_joint`, or `specialists_targeted` with random
  target labels.

Both are scored by `evaluation.detection.detection_metrics` on the same
clean images (the first N test images; the thresholds were calibrated on
test images from index 5000 on).
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Mapping

import numpy as np

import attacks
from attacks.specialists_targeted import random_targets
from evaluation import detection

NAIVE_NOTE = ("naive: defense-unaware attack on the undefended classifier; "
              "not a robustness number")


def _batched(fn, x, y, batch_size, label=""):
    """`fn` over batches of `(x, y)`, with a Keras progress bar."""
    import keras

    print(label, flush=True)
    bar = keras.utils.Progbar(len(x), unit_name="image")
    out = []
    for i in range(0, len(x), batch_size):
        out.append(np.asarray(fn(x[i:i + batch_size], y[i:i + batch_size]),
                              np.float32))
        bar.add(len(out[-1]))
    return np.concatenate(out)


def run_attack(system: Any, role: str, spec: Mapping[str, Any],
               x: np.ndarray, y: np.ndarray, *, seed: int,
               batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """`(x_adv, targets or None)` of the attack `spec` ({"name", ...}) in
    `role` "naive" (on the undefended classifier) or "adaptive" (on the
    system)."""
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if role == "naive":
        base = system.components.get("base", system.classifier)
        fn = attacks.get_attack(name)
        return _batched(lambda a, b: fn(base, a, b, **kwargs), x, y,
                        batch_size, f"naive {name} on the classifier"), None
    fn = attacks.get_system_attack(name)
    targets = None
    if name == "specialists_targeted":
        targets = random_targets(y, system.classifier.output_shape[-1], seed)
    goal = y if targets is None else targets
    x_adv = _batched(lambda a, b: fn(system, a, b, seed=seed, **kwargs),
                     x, goal, batch_size, f"adaptive {name} on the system")
    return x_adv, targets


def evaluate_system(system: Any, x: np.ndarray, y: np.ndarray,
                    report_dir: pathlib.Path, *,
                    attack_specs: Mapping[str, Mapping[str, Any]],
                    seed: int = 0, batch_size: int = 100,
                    label: str = "detection") -> dict[str, Any]:
    """Runs each attack of `attack_specs` ({"naive": spec, "adaptive":
    spec}), writes `<label>.json`, `<label>.md`, `<label>_roc.png` and
    `<label>_success_vs_l2.png` (new files) to `report_dir`, and returns
    the report.

    Args:
        system: a calibrated `DetectionSystem`.
        x: float32 `(N, H, W, C)` in `[0, 1]`; y: int `(N,)` labels.
        report_dir: an existing writable directory.
        attack_specs: role -> attack spec; roles "naive" and "adaptive".

    Raises:
        FileExistsError: a report file exists (nothing is overwritten).
    """
    from core import atomic_write

    paths = {k: report_dir / f"{label}{s}" for k, s in (
        ("json", ".json"), ("md", ".md"), ("roc", "_roc.png"),
        ("curve", "_success_vs_l2.png"))}
    for p in paths.values():
        if p.exists():
            raise FileExistsError(f"{p} exists; a report is never "
                                  "overwritten: choose another --output")
    clean = detection.clean_metrics(system, x, y)
    results, rows = {}, {}
    for role, spec in attack_specs.items():
        if not spec:
            continue
        start = time.time()
        x_adv, targets = run_attack(system, role, spec, x, y, seed=seed,
                                    batch_size=batch_size)
        res = detection.detection_metrics(system, x, y, x_adv, clean,
                                          targets=targets)
        res["seconds"] = round(time.time() - start, 1)
        res["attack"] = dict(spec)
        res["naive"] = role == "naive"
        if role == "naive":
            res["note"] = NAIVE_NOTE
        results[f"{role}: {spec['name']}"] = res
        rows[role] = detection.to_json(res)
    report = {
        "system": system.kind, "detectors": system.names,
        "paper": system.config.get("paper"),
        "thresholds": system.thresholds.tolist(),
        "fpr_target": system.config.get("fpr_target"),
        "calibration": system.config.get("calibration"),
        "differentiable": system.differentiable,
        "randomized": system.randomized,
        "num_examples": int(len(y)), "seed": seed,
        "clean": {k: v for k, v in clean.items()
                  if not isinstance(v, np.ndarray)},
        "attacks": rows,
    }
    if results:
        detection.plot_roc(system, clean, results, paths["roc"])
        detection.plot_success_vs_distortion(
            results, paths["curve"], title=system.kind)
    atomic_write.write_text(paths["json"], json.dumps(report, indent=2)
                            + "\n", exclusive=True)
    atomic_write.write_text(paths["md"], markdown(report), exclusive=True)
    return report


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v):
    return "n/a" if v is None else f"{v:.3f}"


def markdown(report: Mapping[str, Any]) -> str:
    """A Markdown summary of `evaluate_system`'s report."""
    c = report["clean"]
    lines = [
        f"# {report['system']} ({', '.join(report['detectors'])})", "",
        f"Paper: {report['paper']}", "",
        f"{report['num_examples']} test images; thresholds at "
        f"{report['fpr_target']} FPR on held-out clean images "
        f"({report['calibration']}).", "",
        f"- clean accuracy {_pct(c['clean_accuracy'])}, accepted and "
        f"correct {_pct(c['clean_accuracy_accepted'])}, false-positive rate"
        f" {_pct(c['false_positive_rate'])}", "",
        "| attack | naive? | seeds | misclassified | detected | "
        "success (fool all) | ROC AUC | mean L2 | median L2 | mean Linf |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for role, r in report["attacks"].items():
        a = r["attack"]
        lines.append(
            f"| {a['name']} ({role}) | {'**NAIVE**' if r['naive'] else 'adaptive'} "
            f"| {r['num_seeds']} | {_pct(r['misclassified_rate'])} | "
            f"{_pct(r['detection_rate'])} | {_pct(r['success_rate'])} | "
            f"{_num(r['roc_auc']['joint'])} | {_num(r['l2']['mean'])} | "
            f"{_num(r['l2']['median'])} | {_num(r['linf']['mean'])} |")
    if any(r["naive"] for r in report["attacks"].values()):
        lines += ["", f"NAIVE rows: {NAIVE_NOTE}."]
    return "\n".join(lines) + "\n"
