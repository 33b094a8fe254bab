"""Training Specialists+1 (Abbasi & Gagné 2017, arXiv 1702.06856, Sec. 2-3).

1. Confusion matrix of the generalist (the given, trained classifier) on
   training images: by default on their FGSM adversarial examples, since
   the paper motivates the specialties by where the adversarial examples
   of a class land (abstract, Sec. 2); `confusion_source="clean"` uses the
   clean predictions instead.
2. Class sets (`class_sets_from_confusion`): U_i = i plus the classes
   taking the top 80% of class i's misclassifications, and the complements;
   duplicates merged.
3. One specialist CNN per set, trained with plain `model.fit` on the
   training images of its classes only (at most `max_per_class` per
   class and 2 epochs, scaled down to fit the CPU budget).

Cost, measured once (TensorFlow, OMP_NUM_THREADS=1, the shared 2-core CPU
under a load of ~10, the defaults below, the Madry CNN generalist at 88.5%
clean): FGSM confusion on 2000 images 39 s; 14 sets (the 20 less merged
duplicates and single classes); training 14 specialists 20-40 s each of
wall time (about a third of it CPU time), 379 s wall in all (about 2.5 CPU
minutes). Specialist accuracy on held-out images of their classes:
0.72-0.95.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
from keras import ops
from sklearn.metrics import confusion_matrix

from models.detection.detection_system import DetectionSystem
from models.detection.specialists import (class_sets_from_confusion,
                                          specialist_cnn, specialists_system)

SOURCES = ("fgsm", "clean")


def generalist_confusion(classifier: keras.Model, x: Any, y: Any, *,
                         source: str = "fgsm", eps: float = 0.1,
                         batch_size: int = 500) -> np.ndarray:
    """The generalist's confusion matrix, int64 `(K, K)` (row: true class,
    column: predicted class), on `x` (float32 `(N, H, W, C)` in `[0, 1]`)
    or, for `source="fgsm"`, on FGSM examples of `x` at L-inf `eps`.

    Raises:
        ValueError: `source` not in ("fgsm", "clean").
    """
    if source not in SOURCES:
        raise ValueError(f"confusion_source must be one of {SOURCES}; got "
                         f"{source!r}")
    from attacks import fgsm

    k = classifier.output_shape[-1]
    preds = []
    for i in range(0, len(x), batch_size):
        xb = np.asarray(x[i:i + batch_size], np.float32)
        if source == "fgsm":
            xb = ops.convert_to_numpy(fgsm(classifier, xb,
                                           np.asarray(y[i:i + batch_size],
                                                      np.int32), eps=eps))
        preds.append(np.argmax(classifier.predict(xb, verbose=0), -1))
    return confusion_matrix(np.asarray(y), np.concatenate(preds),
                            labels=np.arange(k)).astype(np.int64)


def _subset(y, classes, max_per_class, rng):
    idx = [rng.permutation(np.flatnonzero(y == c))[:max_per_class]
           for c in classes]
    return rng.permutation(np.concatenate(idx))


def _given_sets(class_sets, k):
    sets = np.asarray(class_sets)
    if sets.ndim != 2 or sets.shape[1] != k or sets.dtype != bool:
        raise ValueError(f"class_sets must be bool (S, {k}); got "
                         f"{sets.dtype} {sets.shape}")
    return sets


def _train_specialist(classes, x, y, *, num_classes, name, width, dense,
                      learning_rate, epochs, batch_size):
    """A `specialist_cnn` over `classes`, fitted on `x`, `y` (labels in
    `classes`; its padded logits make the 10-way CE its own)."""
    net = specialist_cnn(classes, num_classes=num_classes,
                         input_shape=x.shape[1:], width=width, dense=dense,
                         name=name)
    net.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
    net.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    # A fresh, uncompiled copy: the system's files then hold no Adam slots.
    clean = specialist_cnn(classes, num_classes=num_classes,
                           input_shape=x.shape[1:], width=width, dense=dense,
                           name=name)
    clean.set_weights(net.get_weights())
    return clean


def _accuracy(net, classes, x_val, y_val):
    """Accuracy of `net` on the images of `classes` in `(x_val, y_val)`, or
    None without them."""
    if x_val is None or y_val is None:
        return None
    keep = np.isin(np.asarray(y_val), classes)
    if not keep.any():
        return None
    pred = np.argmax(net.predict(np.asarray(x_val)[keep], verbose=0), -1)
    return float(np.mean(pred == np.asarray(y_val)[keep]))


def _check_pair(x_train, y_train):
    """`x_train` as float32 and `y_train` as int64 `(N,)`.

    Raises:
        ValueError: different lengths.
    """
    x_train = np.asarray(x_train, np.float32)
    y_train = np.asarray(y_train).astype(np.int64).reshape(-1)
    if len(x_train) != len(y_train):
        raise ValueError(f"x_train and y_train differ in length: "
                         f"{len(x_train)} vs {len(y_train)}")
    return x_train, y_train


def _train_all(sets, x_train, y_train, x_val, y_val, rng, *, num_classes,
               max_per_class, verbose, train):
    """One specialist per class set (in order); returns `(specialists,
    validation accuracies or None)`."""
    specialists, val_acc = [], []
    for s, mask in enumerate(sets):
        classes = np.flatnonzero(mask)
        idx = _subset(y_train, classes, max_per_class, rng)
        t0 = time.perf_counter()
        net = _train_specialist(
            classes, x_train[idx], y_train[idx], num_classes=num_classes,
            name=f"specialist_{s}", **train)
        acc = _accuracy(net, classes, x_val, y_val)
        val_acc.append(acc)
        if verbose:
            extra = "" if acc is None else f", val acc {acc:.3f}"
            print(f"specialist {s + 1}/{len(sets)} classes "
                  f"{classes.tolist()}: {len(idx)} images, "
                  f"{time.perf_counter() - t0:.1f}s{extra}", flush=True)
        specialists.append(net)
    return specialists, val_acc


def fit_specialists(classifier: keras.Model, x_train: Any, y_train: Any, *,
                    x_val: Any = None, y_val: Any = None, seed: int = 0,
                    coverage: float = 0.8, confusion_source: str = "fgsm",
                    confusion_eps: float = 0.1, confusion_images: int = 2000,
                    max_per_class: int = 1000, epochs: int = 2,
                    batch_size: int = 64, learning_rate: float = 1e-3,
                    width: int = 16, dense: int = 128,
                    class_sets: Any = None,
                    verbose: int = 1) -> DetectionSystem:
    """Trains the specialists of `classifier` (the generalist).

    Args:
        classifier: the trained generalist, float32 images `(batch, H, W,
            C)` in `[0, 1]` -> logits `(batch, K)`.
        x_train: float32 `(N, H, W, C)` in `[0, 1]`; y_train: int `(N,)`.
        x_val, y_val: optional held-out images; only used to report each
            specialist's accuracy on its classes (`config`).
        seed: seeds Keras / NumPy (subsets, initialization, shuffling).
        coverage: share of each class's misclassifications its specialty
            covers (0.8, Sec. 2).
        confusion_source: "fgsm" (adversarial confusion, our reading of
            the paper) or "clean".
        confusion_eps: FGSM L-inf budget on the [0, 1] scale (0.1, the
            project's Fashion-MNIST budget).
        confusion_images: training images (the first ones of a seeded
            permutation) for the confusion matrix.
        max_per_class: training images per class for each specialist.
        epochs, batch_size, learning_rate: Adam training of each
            specialist.
        width, dense: `specialist_cnn` sizes.
        class_sets: None (derive them, steps 1-2), or given bool `(S, K)`
            specialist sets (e.g. a previous run's), skipping the confusion
            matrix.
        verbose: 0 silent, 1 one line per specialist.

    Returns:
        `DetectionSystem(kind="specialists")`, uncalibrated (calibrate it on
        held-out clean images); `config` records the settings, the
        confusion matrix, the class sets and the training time.

    Raises:
        ValueError: a bad `confusion_source`, `coverage` or `class_sets`,
            or `x_train` / `y_train` of different lengths.
    """
    x_train, y_train = _check_pair(x_train, y_train)
    k = classifier.output_shape[-1]
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    if class_sets is None:
        pick = rng.permutation(len(x_train))[:confusion_images]
        conf = generalist_confusion(classifier, x_train[pick],
                                    y_train[pick], source=confusion_source,
                                    eps=confusion_eps)
        sets = class_sets_from_confusion(conf, coverage)
    else:
        conf, sets = None, _given_sets(class_sets, k)
    t_conf = time.perf_counter() - start
    specialists, val_acc = _train_all(
        sets, x_train, y_train, x_val, y_val, rng, num_classes=k,
        max_per_class=max_per_class, verbose=verbose,
        train=dict(width=width, dense=dense, learning_rate=learning_rate,
                   epochs=epochs, batch_size=batch_size))
    config = {
        "coverage": coverage, "confusion_source": confusion_source,
        "confusion_eps": confusion_eps,
        "confusion_images": 0 if conf is None else int(conf.sum()),
        "confusion": None if conf is None else conf.tolist(),
        "max_per_class": max_per_class, "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate, "width": width, "dense": dense,
        "seed": seed, "specialist_val_accuracy": val_acc,
        "confusion_seconds": round(t_conf, 1),
        "train_seconds": round(time.perf_counter() - start, 1)}
    return specialists_system(classifier, specialists, sets, config=config)
