"""Metrics, reports and plots for detection defenses.

For a calibrated `models.detection.DetectionSystem`, clean test images
`x, y` and the adversarial images `x_adv` an attack made from them,
`detection_metrics` gives the numbers the detection papers report and a
skeptical reader needs side by side:

- `clean_accuracy`: the system's accuracy on `x` (rejected images count as
  wrong for `clean_accuracy_accepted`, which is the accuracy of what the
  system would actually serve);
- `false_positive_rate`: the fraction of clean test images rejected
  (the threshold was set at a stated rate on separate held-out images);
- over the SEEDS (clean images the system classifies correctly and
  accepts, as in Carlini & Wagner 2017, arXiv 1705.07263, Sec. 5):
  - `misclassified_rate`: the attack changed the system's label,
    whatever the detectors say;
  - `detection_rate`: of those misclassified examples, the fraction some
    detector rejects (Xu et al. 2018, Table 4's "detection rate on
    successful adversarial examples");
  - `success_rate`: misclassified AND accepted: the attack fooled the
    classifier and every detector, the only success that counts;
- `roc_auc`: ROC AUC between the clean images' scores and the successful-
  on-the-classifier adversarial images' scores, per detector and for the
  joint score `max_d (s_d - t_d) / sigma_d` (rejection iff > 0);
- the mean and median L2 and L-inf distortion of the successful examples.

`success_vs_distortion` gives the success rate as a function of an L2
budget (the minimum-norm attacks are unbounded), and `plot_roc` /
`plot_success_vs_distortion` draw the figures with matplotlib.

References:
    Xu, Evans, Qi 2018 (arXiv 1704.01155), Sec. 5.1-5.2 (detection rate,
    ROC AUC, FPR on legitimate examples).
    Carlini & Wagner 2017, "Adversarial Examples Are Not Easily Detected",
    arXiv 1705.07263, Sec. 5 (evaluation on correctly classified seeds).
    He et al. 2017 (arXiv 1706.04701), Sec. 3-5 (success rate and mean L2
    distortion of the adaptive attack).
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn import metrics as skm


def joint_score(system: Any, scores: np.ndarray) -> np.ndarray:
    """`max_d (s_d - t_d) / sigma_d`, float `(N,)`: > 0 exactly where the
    system rejects."""
    return np.max((np.asarray(scores) - system.thresholds) / system.scales,
                  axis=-1)


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "median": None}
    return {"mean": float(np.mean(values)),
            "median": float(np.median(values))}


def _auc(clean: np.ndarray, adv: np.ndarray) -> float | None:
    if clean.size == 0 or adv.size == 0:
        return None
    labels = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    return float(skm.roc_auc_score(labels, np.r_[clean, adv]))


def clean_metrics(system: Any, x: np.ndarray, y: np.ndarray
                  ) -> dict[str, Any]:
    """The system on clean images: accuracy, FPR, and the raw arrays
    (`labels`, `rejected`, `scores`) the attack metrics reuse.

    Args:
        system: a calibrated `DetectionSystem`.
        x: float32 `(N, H, W, C)` in `[0, 1]`; y: int `(N,)`.
    """
    labels, rejected, scores = system.predict(x)
    correct = labels == np.asarray(y)
    return {
        "num_examples": int(len(y)),
        "clean_accuracy": float(np.mean(correct)),
        "clean_accuracy_accepted": float(np.mean(correct & ~rejected)),
        "false_positive_rate": float(np.mean(rejected)),
        "labels": labels, "rejected": rejected, "scores": scores,
    }


def detection_metrics(system: Any, x: np.ndarray, y: np.ndarray,
                      x_adv: np.ndarray, clean: Mapping[str, Any],
                      *, targets: np.ndarray | None = None
                      ) -> dict[str, Any]:
    """Attack metrics over the seeds (module doc).

    Args:
        system: the calibrated `DetectionSystem` that was attacked.
        x, y: the clean images and true labels, `(N, H, W, C)` / `(N,)`.
        x_adv: the attack's output for `x`, same shape, in `[0, 1]`.
        clean: `clean_metrics(system, x, y)`.
        targets: int `(N,)` target labels of a targeted attack (success then
            needs the target, not just any wrong label), or None.

    Returns:
        JSON-ready dict: `num_seeds`, `misclassified_rate`,
        `detection_rate`, `success_rate`, `roc_auc` (`joint` and per
        detector name), `l2` / `linf` (`mean`, `median` over successes),
        and the per-example arrays `success`, `l2_all` (NumPy, dropped by
        `to_json`).

    Raises:
        ValueError: `x_adv` of another shape than `x`.
    """
    x, x_adv, y = np.asarray(x), np.asarray(x_adv), np.asarray(y)
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv has shape {x_adv.shape}; x has {x.shape}")
    labels, rejected, scores = system.predict(x_adv)
    seeds = (clean["labels"] == y) & ~clean["rejected"]
    fooled = (labels == targets) if targets is not None else (labels != y)
    fooled &= seeds
    success = fooled & ~rejected
    diff = (x_adv - x).reshape(len(x), -1)
    l2 = np.linalg.norm(diff, axis=1)
    linf = np.max(np.abs(diff), axis=1)
    n_seeds, n_fooled = int(seeds.sum()), int(fooled.sum())
    auc = {"joint": _auc(joint_score(system, clean["scores"]),
                         joint_score(system, scores[fooled]))}
    for d, name in enumerate(system.names):
        auc[name] = _auc(clean["scores"][:, d], scores[fooled, d])
    return {
        "num_seeds": n_seeds,
        "misclassified_rate": n_fooled / max(n_seeds, 1),
        "detection_rate": (float(np.mean(rejected[fooled]))
                           if n_fooled else None),
        "success_rate": float(success.sum()) / max(n_seeds, 1),
        "roc_auc": auc,
        "l2": _stats(l2[success]), "linf": _stats(linf[success]),
        "success": success, "seeds": seeds, "l2_all": l2,
        "fooled": fooled, "adv_scores": scores,
    }


def success_vs_distortion(result: Mapping[str, Any],
                          budgets: Sequence[float]) -> list[float]:
    """Success rate over the seeds when the L2 distortion must be <= each
    budget (the curve of an unbounded minimum-norm attack)."""
    seeds = result["seeds"]
    ok = result["success"]
    l2 = result["l2_all"]
    n = max(int(seeds.sum()), 1)
    return [float(np.sum(ok & (l2 <= b))) / n for b in budgets]


def to_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """`result` without its NumPy arrays."""
    return {k: v for k, v in result.items()
            if not isinstance(v, np.ndarray)}


def plot_roc(system: Any, clean: Mapping[str, Any],
             results: Mapping[str, Mapping[str, Any]],
             path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """ROC curves of the joint score, clean vs each attack's examples that
    fooled the classifier, written as a PNG to `path` (a new file)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    clean_s = joint_score(system, clean["scores"])
    for label, res in results.items():
        adv = joint_score(system, res["adv_scores"][res["fooled"]])
        if adv.size == 0:
            continue
        truth = np.r_[np.zeros(len(clean_s)), np.ones(len(adv))]
        fpr, tpr, _ = skm.roc_curve(truth, np.r_[clean_s, adv])
        auc = res["roc_auc"]["joint"]
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    fpr_at = clean["false_positive_rate"]
    ax.axvline(fpr_at, color="grey", ls=":", label=f"threshold FPR "
               f"{fpr_at:.3f}")
    ax.plot([0, 1], [0, 1], color="lightgrey", lw=0.8)
    ax.set(xlabel="false-positive rate (clean)",
           ylabel="detection rate (adversarial)", title=title or system.kind)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_success_vs_distortion(results: Mapping[str, Mapping[str, Any]],
                               path: str | pathlib.Path, title: str = "",
                               max_l2: float | None = None) -> pathlib.Path:
    """Success rate (fooling classifier and detectors) against the L2
    budget, one line per attack, as a PNG at `path` (a new file)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    top = max_l2 or max([float(np.max(r["l2_all"][r["success"]]))
                         for r in results.values() if r["success"].any()]
                        + [1.0])
    budgets = np.linspace(0.0, top, 60)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, res in results.items():
        ax.plot(budgets, success_vs_distortion(res, budgets), label=label)
    ax.set(xlabel="L2 distortion budget ([0, 1] pixels)",
           ylabel="success rate (fool all)", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path) -> pathlib.Path:
    from matplotlib import pyplot as plt

    from core import atomic_write

    path = pathlib.Path(path)
    fig.tight_layout()
    with atomic_write.replacing(path, exclusive=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
