"""`DetectionSystem`: a classifier plus adversarial-example detectors.

Every detection defense of the project (feature squeezing, Specialists+1,
MagNet, LID, the He et al. ensemble of unrelated detectors) is one of these,
built by its own module in `models/detection/`:

- `classifier`: a Keras model, float32 images `(batch, H, W, C)` in `[0, 1]`
  -> float32 logits `(batch, classes)`: the system's decision (for MagNet it
  reads the reformed image; for Specialists+1 it is the vote);
- `detector`: a Keras model, the same images -> float32 scores `(batch, D)`,
  one column per detector, higher meaning "more likely adversarial";
- `thresholds`: float `(D,)`; an input is *rejected* when any score exceeds
  its threshold. They are set by `calibrate` on held-out clean images so
  that the system rejects a stated fraction of them (the false-positive
  rate, 5% unless the paper says otherwise);
- `scales`: float `(D,)`, the spread of each score on clean images (its
  interquartile range), so that an attack can add the detectors' hinge
  losses on one footing;
- `components` / `arrays`: extra Keras models and NumPy arrays an adaptive
  attack needs (e.g. the Specialists+1 members' logits), saved alongside.

The threat model is read from the layers as everywhere in the project
(`attacks.adaptive.threat_model`): non-differentiable layers get BPDA,
randomized ones EOT. `differentiable` / `randomized` summarise it.

Saved as a directory: `system.json` (kind, names, thresholds, scales,
config, paper), `classifier.keras`, `detector.keras`, one `.keras` per
component and `arrays.npz`, each written atomically; `load_system(path)`
reads it back.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import keras
import numpy as np

SYSTEM_FILE = "system.json"


def _flags(model: keras.Model) -> tuple[bool, bool]:
    """`(differentiable, randomized)` of every layer of `model`."""
    from core.keras_internals import flatten_layers

    layers = list(flatten_layers(model, include_self=True))
    return (all(getattr(type(layer), "differentiable", True)
                for layer in layers),
            any(getattr(type(layer), "randomized", False)
                for layer in layers))


class DetectionSystem:
    """A classifier with detectors and thresholds (module doc).

    Args:
        kind: the defense's name ("feature_squeezing", "magnet", ...).
        classifier: images -> logits `(batch, classes)`.
        detector: images -> scores `(batch, D)`.
        names: D detector names.
        thresholds: D thresholds, or None until `calibrate`.
        scales: D positive score spreads, or None until `calibrate`.
        components: extra named Keras models.
        arrays: extra named NumPy arrays.
        config: JSON-serializable settings (paper, FPR, hyper-parameters).

    Raises:
        ValueError: `names`, `thresholds` or `scales` of the wrong length.
    """

    def __init__(self, kind: str, classifier: keras.Model,
                 detector: keras.Model, names: Sequence[str], *,
                 thresholds: Sequence[float] | None = None,
                 scales: Sequence[float] | None = None,
                 components: Mapping[str, keras.Model] | None = None,
                 arrays: Mapping[str, np.ndarray] | None = None,
                 config: Mapping[str, Any] | None = None):
        self.kind = kind
        self.classifier = classifier
        self.detector = detector
        self.names = list(names)
        self.thresholds = self._vector("thresholds", thresholds)
        self.scales = self._vector("scales", scales)
        self.components = dict(components or {})
        self.arrays = {k: np.asarray(v) for k, v in (arrays or {}).items()}
        self.config = dict(config or {})

    def _vector(self, what, values):
        if values is None:
            return None
        values = np.asarray(values, np.float32).reshape(-1)
        if values.shape != (len(self.names),):
            raise ValueError(f"{what} must have one value per detector "
                             f"{self.names}; got {values.tolist()}")
        return values

    @property
    def differentiable(self) -> bool:
        """False when any layer of the classifier or detector is."""
        return all(_flags(m)[0] for m in (self.classifier, self.detector))

    @property
    def randomized(self) -> bool:
        """True when any layer of the classifier or detector is."""
        return any(_flags(m)[1] for m in (self.classifier, self.detector))

    # -- inference ---------------------------------------------------------
    def scores(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Detector scores, float32 `(N, D)` NumPy, for images `(N, H, W,
        C)` in `[0, 1]`."""
        return np.asarray(self.detector.predict(x, batch_size=batch_size,
                                                verbose=0), np.float32)

    def logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The system's logits, float32 `(N, classes)` NumPy."""
        return np.asarray(self.classifier.predict(x, batch_size=batch_size,
                                                  verbose=0), np.float32)

    def rejected(self, scores: np.ndarray) -> np.ndarray:
        """bool `(N,)`: any score above its threshold.

        Raises:
            ValueError: the system is not calibrated.
        """
        if self.thresholds is None:
            raise ValueError(f"{self.kind} has no thresholds; call "
                             "calibrate(x_clean) first")
        return np.any(np.asarray(scores) > self.thresholds, axis=-1)

    def predict(self, x: np.ndarray, batch_size: int = 256
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(labels int (N,), rejected bool (N,), scores float (N, D))`."""
        scores = self.scores(x, batch_size)
        labels = np.argmax(self.logits(x, batch_size), axis=-1)
        return labels, self.rejected(scores), scores

    # -- calibration -------------------------------------------------------
    def calibrate(self, x_clean: np.ndarray, fpr: float = 0.05,
                  batch_size: int = 256) -> float:
        """Sets `thresholds` and `scales` on held-out clean images.

        Every detector gets the same per-detector quantile `1 - q` of its
        clean scores, with `q` found by bisection so that the fraction of
        `x_clean` that ANY detector rejects is `fpr` (for a single detector,
        simply its `1 - fpr` quantile), as Xu et al. 2018 (Sec. 5.1) and
        Meng & Chen 2017 (Sec. 5.1) select thresholds on clean validation
        images.

        Args:
            x_clean: float32 `(N, H, W, C)` in `[0, 1]`, images never used
                for training any component, N >= 20.
            fpr: target false-positive rate in (0, 1).

        Returns:
            The achieved false-positive rate on `x_clean`.

        Raises:
            ValueError: `fpr` outside (0, 1), or fewer than 20 images.
        """
        if not 0.0 < float(fpr) < 1.0:
            raise ValueError(f"fpr must be in (0, 1); got {fpr!r}")
        if len(x_clean) < 20:
            raise ValueError("calibrate needs at least 20 held-out clean "
                             f"images; got {len(x_clean)}")
        s = self.scores(x_clean, batch_size)
        lo, hi = 0.0, float(fpr)
        for _ in range(40):
            q = (lo + hi) / 2
            t = np.quantile(s, 1.0 - q, axis=0)
            rate = np.mean(np.any(s > t, axis=-1))
            lo, hi = (q, hi) if rate < fpr else (lo, q)
        self.thresholds = np.quantile(s, 1.0 - lo, axis=0).astype(np.float32)
        q75, q25 = np.quantile(s, [0.75, 0.25], axis=0)
        spread = np.maximum(q75 - q25, 1e-6 * (1.0 + np.abs(q75)))
        self.scales = spread.astype(np.float32)
        self.config["fpr_target"] = float(fpr)
        achieved = float(np.mean(self.rejected(s)))
        self.config["fpr_calibration"] = achieved
        return achieved

    # -- persistence -------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Writes the system to the new directory `path`.

        Raises:
            FileExistsError: `path` exists (nothing is overwritten).
            ValueError: the system is not calibrated, or a weight, threshold
                or array is not finite (nothing is written).
        """
        from core import atomic_write

        if self.thresholds is None:
            raise ValueError("calibrate the system before saving it")
        models = {"classifier": self.classifier, "detector": self.detector,
                  **self.components}
        for name, model in models.items():
            if not all(np.all(np.isfinite(keras.ops.convert_to_numpy(w)))
                       for w in model.weights):
                raise ValueError(f"refusing to save {self.kind}: {name} has "
                                 "non-finite weights")
        for name, value in (("thresholds", self.thresholds),
                            ("scales", self.scales), *self.arrays.items()):
            if np.issubdtype(np.asarray(value).dtype, np.floating) and \
                    not np.all(np.isfinite(value)):
                raise ValueError(f"refusing to save {self.kind}: {name} is "
                                 "not finite")
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=False)
        for name, model in models.items():
            with atomic_write.replacing(path / f"{name}.keras",
                                        exclusive=True) as tmp:
                model.save(str(tmp))
        if self.arrays:
            with atomic_write.replacing(path / "arrays.npz",
                                        exclusive=True) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **self.arrays)
        meta = {"kind": self.kind, "names": self.names,
                "thresholds": self.thresholds.tolist(),
                "scales": self.scales.tolist(),
                "components": sorted(self.components),
                "arrays": sorted(self.arrays), "config": self.config}
        atomic_write.write_text(path / SYSTEM_FILE,
                                json.dumps(meta, indent=2) + "\n",
                                exclusive=True)


def is_system_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory written by `DetectionSystem.save`."""
    return (pathlib.Path(path) / SYSTEM_FILE).is_file()


def _read_model(path: pathlib.Path) -> keras.Model:
    from core.errors import UserError

    try:
        model = keras.saving.load_model(path)
    except Exception as err:  # noqa: BLE001 - Keras raises many kinds
        first = str(err).strip().splitlines()[0] if str(err).strip() else \
            type(err).__name__
        raise UserError(f"{path} could not be loaded ({first})") from None
    if not all(np.all(np.isfinite(keras.ops.convert_to_numpy(w)))
               for w in model.weights):
        raise UserError(f"{path} has non-finite weights")
    return model


def load_system(path: str | os.PathLike) -> DetectionSystem:
    """Reads a directory written by `DetectionSystem.save`.

    Raises:
        UserError: a missing, corrupt or non-finite file (one line naming
            it).
    """
    # Registers the project's layers for deserialization.
    # (importing models.detection, this module's package, registered the
    # detection modules' layers.)
    import layers  # noqa: F401
    import models  # noqa: F401 (the generative models' layers)
    from core.errors import UserError

    path = pathlib.Path(path)
    try:
        meta = json.loads((path / SYSTEM_FILE).read_text())
        kind, names = meta["kind"], meta["names"]
        parts = ["classifier", "detector", *meta["components"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path / SYSTEM_FILE} is not a detection system "
                        f"description ({err})") from None
    loaded = {name: _read_model(path / f"{name}.keras") for name in parts}
    arrays = {}
    if meta.get("arrays"):
        with np.load(path / "arrays.npz") as data:
            arrays = {k: data[k] for k in meta["arrays"]}
    return DetectionSystem(
        kind, loaded.pop("classifier"), loaded.pop("detector"), names,
        thresholds=meta["thresholds"], scales=meta["scales"],
        components=loaded, arrays=arrays, config=meta.get("config"))
