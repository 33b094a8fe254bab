"""Feature squeezing needs no training (Xu, Evans & Qi 2018, arXiv
1704.01155, Sec. 5): the detector compares the given classifier's
predictions on the input and on its squeezed versions, so "fitting" only
assembles the system; the caller calibrates its threshold on held-out clean
images (`DetectionSystem.calibrate`, 5% false positives in the paper).
"""

from __future__ import annotations

from typing import Any, Sequence

import keras

from models.detection.detection_system import DetectionSystem
from models.detection.feature_squeezing import (MNIST_SQUEEZERS,
                                                feature_squeezing_system)


def fit_feature_squeezing(classifier: keras.Model, x_train: Any = None,
                          y_train: Any = None, *, x_val: Any = None,
                          y_val: Any = None, seed: int = 0,
                          squeezers: Sequence[str] = MNIST_SQUEEZERS,
                          name: str = "feature_squeezing",
                          verbose: int = 1) -> DetectionSystem:
    """Builds the (uncalibrated) feature-squeezing system of `classifier`.

    Args:
        classifier: images float32 `(batch, H, W, C)` in `[0, 1]` -> logits
            `(batch, classes)`, already trained.
        x_train, y_train, x_val, y_val, seed: unused (nothing is trained);
            accepted for the common `fit_X` signature.
        squeezers: squeezer names (`models.detection.feature_squeezing`):
            the MNIST joint detector `("bit_depth_1", "median_2x2")` by
            default (Xu et al. 2018, Table 3), or one alone.
        name: the detector column's name.
        verbose: 1 prints one line.

    Returns:
        `DetectionSystem(kind="feature_squeezing")`, uncalibrated.

    Raises:
        ValueError: an empty, repeated or unknown squeezer.
    """
    del x_train, y_train, x_val, y_val, seed
    system = feature_squeezing_system(classifier, squeezers, name=name)
    if verbose:
        print(f"feature squeezing: {system.config['squeezers']} (no "
              "training; calibrate on held-out clean images)")
    return system
