r"""He et al. 2017's ensemble comparison, measured here: the mean L2
distortion the adaptive attack needs against each weak defense alone,
against the strongest single one, and against their ensemble.

He, Wei, Chen, Carlini & Song 2017 ("Adversarial Example Defenses:
Ensembles of Weak Defenses are not Strong", arXiv 1706.04701) report on
MNIST that combining feature squeezers raises the adaptive attack's mean L2
by only ~23% over the strongest single squeezer (Sec. 3), and that the
Specialists+1 ensemble raises it by ~6% over the generalist alone
(Sec. 4), both at ~100% attack success.

- Feature squeezing: from the saved joint system (`--feature_squeezing`,
  a train.py `system/` dir) this builds the 1-bit-depth-only and the
  2x2-median-only detectors on the same classifier, calibrates each at the
  joint system's FPR on the same held-out images, and runs the same
  `detector_joint` attack on all three, plus C&W L2 on the undefended
  classifier.
- Specialists+1 (`--specialists`): `specialists_targeted` on the system
  against targeted C&W L2 with the same confidence and targets on the
  generalist alone.

Mean L2 is over each attack's successes, and over the examples every
attack of the group broke ("common"), the fairer comparison.

    python scripts/ensemble_comparison.py --feature_squeezing=/tmp/fs/system \
        --specialists=/tmp/sp/system --num_examples=500 \
        --output=results/detection_fmnist/ensemble_comparison.json
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import json  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from core import cli  # noqa: E402
from core.errors import UserError  # noqa: E402

_FS = flags.DEFINE_string("feature_squeezing", None, "Feature squeezing "
                          "system directory (train.py's system/).")
_SP = flags.DEFINE_string("specialists", None, "Specialists+1 system dir.")
_NUM = flags.DEFINE_integer("num_examples", 500, "First N test images.",
                            lower_bound=1, upper_bound=5000)
_STEPS = flags.DEFINE_integer("steps", 50, "Adam steps per value of c.",
                              lower_bound=1)
_BSS = flags.DEFINE_integer("binary_search_steps", 4, "Values of c.",
                            lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "Report JSON (a new file).")


def _l2(x, x_adv):
    return np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)


def _summary(runs: dict, x: np.ndarray, seeds: np.ndarray) -> dict:
    """Per attack: success rate over the seeds, mean / median L2 over its
    successes and over the examples every run broke."""
    common = seeds.copy()
    for run in runs.values():
        common &= run["success"]
    out = {}
    for name, run in runs.items():
        l2 = _l2(x, run["x_adv"])
        ok = run["success"] & seeds
        out[name] = {
            "success_rate": float(ok.sum() / max(seeds.sum(), 1)),
            "mean_l2": float(l2[ok].mean()) if ok.any() else None,
            "median_l2": float(np.median(l2[ok])) if ok.any() else None,
            "mean_l2_common": float(l2[common].mean()) if common.any()
            else None,
            "seconds": run["seconds"]}
    out["common_examples"] = int(common.sum())
    return out


def _attack(fn, x, y, batch=100):
    start = time.time()
    x_adv = np.concatenate([np.asarray(fn(x[i:i + batch], y[i:i + batch]),
                                       np.float32)
                            for i in range(0, len(x), batch)])
    return x_adv, round(time.time() - start, 1)


def _feature_squeezing(path, x, y, x_cal, kw):
    from attacks import cw_l2, detector_joint
    from models.detection import load_system
    from models.detection.feature_squeezing import feature_squeezing_system

    joint = load_system(path)
    fpr = joint.config["fpr_target"]
    systems = {}
    for squeezer in ("bit_depth_1", "median_2x2"):
        s = feature_squeezing_system(joint.classifier, (squeezer,),
                                     name=squeezer)
        s.calibrate(x_cal, fpr=fpr)
        systems[f"{squeezer} alone"] = s
    systems["joint (ensemble)"] = joint
    clf = joint.classifier
    seeds = np.argmax(joint.logits(x), -1) == y
    runs = {}
    x_adv, secs = _attack(lambda a, b: cw_l2(clf, a, b, **kw), x, y)
    runs["undefended classifier (C&W L2)"] = {
        "x_adv": x_adv, "seconds": secs,
        "success": np.argmax(joint.logits(x_adv), -1) != y}
    for name, s in systems.items():
        seeds &= ~s.predict(x)[1]
    for name, s in systems.items():
        x_adv, secs = _attack(
            lambda a, b, s=s: detector_joint(s, a, b, **kw), x, y)
        labels, rejected, _ = s.predict(x_adv)
        runs[name] = {"x_adv": x_adv, "seconds": secs,
                      "success": (labels != y) & ~rejected}
    res = _summary(runs, x, seeds)
    singles = [res[k]["mean_l2_common"] for k in res
               if k.endswith("alone") and res[k]["mean_l2_common"]]
    ens = res["joint (ensemble)"]["mean_l2_common"]
    if singles and ens:
        res["ensemble_vs_strongest_single"] = ens / max(singles) - 1.0
    res["thresholds"] = {k: s.thresholds.tolist() for k, s in
                         systems.items()}
    return res


def _specialists(path, x, y, kw):
    from attacks import cw_l2, specialists_targeted
    from attacks.specialists_targeted import random_targets
    from models.detection import load_system

    system = load_system(path)
    kappa = 5.0
    targets = random_targets(y, 10, seed=0)
    base = system.components.get("base", system.classifier)
    seeds = (np.argmax(system.logits(x), -1) == y) & ~system.predict(x)[1]
    runs = {}
    x_adv, secs = _attack(lambda a, b: cw_l2(
        base, a, b, targeted=True, confidence=kappa, **kw), x, targets)
    runs["generalist alone (targeted C&W, kappa 5)"] = {
        "x_adv": x_adv, "seconds": secs,
        "success": np.argmax(np.asarray(base.predict(x_adv, verbose=0)),
                             -1) == targets}
    x_adv, secs = _attack(lambda a, b: specialists_targeted(
        system, a, b, confidence=kappa, **kw), x, targets)
    labels, rejected, _ = system.predict(x_adv)
    runs["Specialists+1 (ensemble)"] = {
        "x_adv": x_adv, "seconds": secs,
        "success": (labels == targets) & ~rejected}
    res = _summary(runs, x, seeds)
    a, b = (res[k]["mean_l2_common"] for k in runs)
    if a and b:
        res["ensemble_vs_generalist"] = b / a - 1.0
    return res


def main(argv):
    del argv
    from training.defense_stage import CALIBRATION_START, fmnist_arrays

    if not (_FS.value or _SP.value):
        raise UserError("give --feature_squeezing and / or --specialists")
    out = pathlib.Path(_OUTPUT.value or "ensemble_comparison.json")
    if out.exists():
        raise UserError(f"--output={out} exists; choose another name")
    x, y = fmnist_arrays("test", 0, _NUM.value)
    kw = {"steps": _STEPS.value, "binary_search_steps": _BSS.value}
    report = {"num_examples": _NUM.value, "attack": kw, "paper":
              "He et al. 2017, arXiv 1706.04701: MNIST ensemble +23% "
              "(feature squeezing), +6% (Specialists+1)"}
    if _FS.value:
        x_cal, _ = fmnist_arrays("test", CALIBRATION_START, 10000)
        report["feature_squeezing"] = _feature_squeezing(_FS.value, x, y,
                                                         x_cal, kw)
    if _SP.value:
        report["specialists"] = _specialists(_SP.value, x, y, kw)
    from core import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write.write_text(out, json.dumps(report, indent=2) + "\n",
                            exclusive=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli.run(main)
