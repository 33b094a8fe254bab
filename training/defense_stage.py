"""The defense stage of train.py: builds a detection system or an input
purifier around a trained classifier (recipes with a `defense` section).

`defense.name` is one of `recipes.ranges.DEFENSES`:

- a detector (`ranges.DETECTORS`): `training/detection/<name>.py`'s
  `fit_<name>(classifier, x_train, y_train, seed=..., **defense.fit)`
  returns an uncalibrated `models.detection.DetectionSystem`; this stage
  calibrates its thresholds at `defense.fpr` on held-out clean images and
  saves it to `<workdir>/system/`;
- a purifier (`ranges.PURIFIERS`): `training.purifiers.build_purifier`
  returns the purifier layer (training its generative model first for
  Defense-GAN and PixelDefend); the defended model `Sequential([purifier,
  classifier])` is saved to `<workdir>/model.keras`, so evaluate.py scores
  it like any model, with BPDA / EOT as its layers' flags demand.

Data: Fashion-MNIST. The defense's components train on the first
`defense.num_train_examples` training images (all 60000 by default);
thresholds are calibrated on test images 5000 to 5000 +
`defense.calibration_examples`, which evaluate.py never scores (it reads
the first N <= 5000 test images of a detection system). Wall-clock times
go to `<workdir>/defense_summary.json`.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import time
from typing import Any

import keras
import numpy as np

from recipes import ranges

#: First test image used for calibration; evaluation stays below it.
CALIBRATION_START = 5000


def output_path(cfg: Any, workdir: pathlib.Path) -> pathlib.Path:
    """Where the stage writes: `system/` (detectors) or `model.keras`."""
    if cfg.defense.name in ranges.DETECTORS:
        return workdir / "system"
    return workdir / "model.keras"


def fmnist_arrays(split: str, start: int = 0, stop: int | None = None,
                  data_dir: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images float32 `(N, 28, 28, 1)` in `[0, 1]` and int32
    labels `(N,)`, examples `[start, stop)` of `split`."""
    from data.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist(split, data_dir)
    x = images[start:stop].astype(np.float32)[..., None] / 255.0
    return x, labels[start:stop].astype(np.int32)


def _fit_detector(name: str, classifier, x, y, seed, kwargs):
    module = importlib.import_module(f"training.detection.{name}")
    return getattr(module, f"fit_{name}")(classifier, x, y, seed=seed,
                                           **kwargs)


def fit_defense(cfg: Any, classifier: keras.Model,
                workdir: pathlib.Path) -> pathlib.Path:
    """Builds, calibrates (detectors) and saves the recipe's defense.

    Args:
        cfg: the recipe config (its `defense` and `data` sections).
        classifier: the trained classifier, float32 images `(batch, 28, 28,
            1)` in `[0, 1]` -> logits `(batch, 10)`.
        workdir: the run's directory.

    Returns:
        The path written (`output_path`).

    Raises:
        ValueError: the recipe's dataset is not Fashion-MNIST.
        FileExistsError: the output exists (nothing is overwritten).
    """
    d = cfg.defense
    if cfg.data.name != "fashion_mnist":
        raise ValueError(f"recipe field data.name={cfg.data.name!r} is not "
                         "accepted with a defense section; expected "
                         "'fashion_mnist' (the detection and purification "
                         "studies follow the papers' MNIST settings)")
    out = output_path(cfg, workdir)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a fresh --workdir")
    kwargs = d.fit.to_dict() if hasattr(d.fit, "to_dict") else dict(d.fit)
    x, y = fmnist_arrays("train", 0, d.num_train_examples, cfg.data.data_dir)
    start = time.time()
    summary: dict[str, Any] = {"defense": d.name, "train_examples": len(x)}
    if d.name in ranges.DETECTORS:
        system = _fit_detector(d.name, classifier, x, y, d.seed, kwargs)
        summary["fit_seconds"] = round(time.time() - start, 1)
        x_cal, _ = fmnist_arrays("test", CALIBRATION_START, CALIBRATION_START
                                 + d.calibration_examples, cfg.data.data_dir)
        achieved = system.calibrate(x_cal, fpr=d.fpr)
        system.config["attacks"] = {
            "naive": d.naive_attack.to_dict(),
            "adaptive": d.adaptive_attack.to_dict()}
        system.config["calibration"] = {
            "split": "test", "start": CALIBRATION_START,
            "examples": len(x_cal)}
        summary.update(fpr_target=d.fpr, fpr_calibration=achieved,
                       thresholds=system.thresholds.tolist(),
                       detectors=system.names)
        system.save(out)
    else:
        from core import atomic_write
        from training.purifiers import build_purifier

        purifier = build_purifier(d.name, x, seed=d.seed, **kwargs)
        summary["fit_seconds"] = round(time.time() - start, 1)
        inputs = keras.Input(classifier.input_shape[1:])
        model = keras.Model(inputs, classifier(purifier(inputs)),
                            name=f"{d.name}_defended")
        with atomic_write.replacing(out, exclusive=True) as tmp:
            model.save(tmp)
    from core import atomic_write

    summary["total_seconds"] = round(time.time() - start, 1)
    atomic_write.write_text(workdir / "defense_summary.json",
                            json.dumps(summary, indent=2) + "\n")
    print(f"defense {d.name}: {out} ({summary['total_seconds']} s)",
          flush=True)
    return out
