"""Training of He et al. 2017's ensemble of three unrelated detectors.

He, Wei, Chen, Carlini & Song 2017 (arXiv 1706.04701), the section on
combining unrelated detectors; the members and the model side are described
in `models.detection.unrelated_detectors`. `fit_unrelated_detectors`:

1. takes `num_train` training images and crafts an adversarial example of
   the classifier for each (FGSM by default, or PGD; L-inf `eps` = 0.1 on
   `[0, 1]`), with the project's attacks and the true labels;
2. trains Gong et al.'s binary CNN on the images, clean = 0 and
   adversarial = 1 (Gong, Wang & Ku 2017, arXiv 1704.04960);
3. trains Metzen et al.'s detector subnetwork on the classifier's inner
   feature map of the same images, the classifier frozen (Metzen et al.
   2017, arXiv 1702.04267: the classifier's weights stay fixed and
   only the detector is trained, on adversarial examples of the classifier;
   their "dynamic adversary" variant is not done here). The features are
   computed once with the classifier's own layers and the head is fitted on
   them, which is the same optimization as training the attached subnetwork
   with the trunk frozen, without repeating the trunk's forward pass every
   epoch;
4. stores `kde_per_class` training images per class (by true label) as
   the KDE's reference set in the classifier's last hidden layer (Feinman
   et al. 2017, arXiv 1703.00410, use the whole training set; a
   subsample keeps the detector light: 500 per class x 1024 features x 4
   bytes = 20 MB).

Budget, measured with the defaults (5000 images, FGSM eps 0.1, 3 epochs
each, 500 KDE points per class) on the standard Madry CNN (width 32) and
Fashion-MNIST, one CPU thread (OMP_NUM_THREADS=1) of a shared 2-core
machine: 140 s of CPU in all (450 s wall under load; the stages' wall times
were adversarial examples 67 s, Gong 110 s, Metzen 257 s, KDE 13 s, as
recorded in `config["times_s"]`). The papers train on the full MNIST
training set; `num_train` and `epochs` are scaled down to fit that
budget.
"""

from __future__ import annotations

import time
from typing import Sequence

import keras
import numpy as np

from models.detection.detection_system import DetectionSystem
from models.detection.unrelated_detectors import (MNIST_BANDWIDTH,
                                                  METZEN_FILTERS,
                                                  feature_model,
                                                  gong_binary_cnn,
                                                  metzen_detector_head,
                                                  unrelated_detectors_system)

ATTACKS = ("fgsm", "pgd")


def _check_data(x, y, what):
    x = np.asarray(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} must be float images (N, H, W, C) in "
                         f"[0, 1]; got {x.dtype} {x.shape}")
    if x.size and (np.min(x) < 0.0 or np.max(x) > 1.0):
        raise ValueError(f"{what} must lie in [0, 1]; got "
                         f"[{np.min(x):.3g}, {np.max(x):.3g}]")
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels of {what} must be {len(x)} ints; got "
                         f"{y.dtype} {y.shape}")
    return x.astype(np.float32), y.astype(np.int32)


def adversarial_examples(classifier: keras.Model, x: np.ndarray,
                         y: np.ndarray, *, attack: str = "fgsm",
                         eps: float = 0.1, steps: int = 5,
                         step_size: float | None = None, seed: int = 0,
                         batch_size: int = 500) -> np.ndarray:
    """Untargeted L-inf adversarial examples of `classifier` on `(x, y)`.

    Args:
        classifier: images -> logits.
        x: float32 `(N, H, W, C)` in `[0, 1]`; y: int `(N,)` true labels.
        attack: "fgsm" (`attacks.fgsm`) or "pgd" (`attacks.pgd`, random
            start, `steps` steps of `step_size`, default `eps / 4`).
        eps: L-inf budget on the `[0, 1]` scale.
        seed: PGD's random starts.

    Returns:
        float32 `(N, H, W, C)` in `[0, 1]`.

    Raises:
        ValueError: `attack` not in ("fgsm", "pgd"), or the attack's own
            errors (bad `eps`, `steps`, `step_size`).
    """
    from attacks import fgsm, pgd

    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}; got {attack!r}")
    out = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if attack == "fgsm":
            adv = fgsm(classifier, xb, yb, eps=eps)
        else:
            adv = pgd(classifier, xb, yb, eps=eps, steps=steps,
                      step_size=step_size or eps / 4,
                      seed=seed + start)
        out.append(keras.ops.convert_to_numpy(adv))
    return np.concatenate(out).astype(np.float32)


def _fit_binary(model, x, labels, val, *, epochs, batch_size,
                learning_rate, verbose):
    """Trains `model` (inputs -> one logit) with binary cross-entropy;
    returns its final (train, validation or None) accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="acc")])
    history = model.fit(x, labels, epochs=epochs, batch_size=batch_size,
                        shuffle=True, verbose=2 if verbose else 0)
    val_acc = None
    if val is not None:
        val_acc = float(model.evaluate(*val, batch_size=500, verbose=0,
                                       return_dict=True)["acc"])
    return float(history.history["acc"][-1]), val_acc


def _per_class_subsample(y, per_class, num_classes, rng):
    idx = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        if len(members) == 0:
            raise ValueError(f"class {c} has no training image for the KDE; "
                             f"classes present: {np.unique(y).tolist()}")
        idx.append(rng.choice(members, min(per_class, len(members)),
                              replace=False))
    return np.sort(np.concatenate(idx))


def _check_fit_args(x_train, y_train, attack, num_train, epochs,
                    kde_per_class, batch_size):
    """Checked `(x_train, y_train)`.

    Raises:
        ValueError: bad data, a count that is not an int >= 1, or an
            unknown attack.
    """
    x_train, y_train = _check_data(x_train, y_train, "x_train")
    for name, value in (("num_train", num_train), ("epochs", epochs),
                        ("kde_per_class", kde_per_class),
                        ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}; got {attack!r}")
    return x_train, y_train


def _detector_data(classifier, x_train, y_train, x_val, y_val, rng,
                   num_train, attack_kw, times, say):
    """The binary detectors' training set: `num_train` clean training
    images (label 0) and their adversarial examples (label 1), plus the
    same for the validation images. Returns `(x, t, val or None,
    classifier accuracy on the adversarial examples, n)`."""
    n = min(num_train, len(x_train))
    idx = np.sort(rng.choice(len(x_train), n, replace=False))
    x_clean, y_clean = x_train[idx], y_train[idx]
    t0 = time.perf_counter()
    x_adv = adversarial_examples(classifier, x_clean, y_clean, **attack_kw)
    adv_acc = float(np.mean(np.argmax(classifier.predict(
        x_adv, batch_size=500, verbose=0), -1) == y_clean))
    x_det = np.concatenate([x_clean, x_adv])
    t_det = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.float32)
    val = None
    if x_val is not None:
        x_val, y_val = _check_data(x_val, y_val, "x_val")
        xv_adv = adversarial_examples(classifier, x_val, y_val, **attack_kw)
        val = (np.concatenate([x_val, xv_adv]),
               np.concatenate([np.zeros(len(x_val)),
                               np.ones(len(x_val))]).astype(np.float32))
    times["adversarial_s"] = time.perf_counter() - t0
    say(f"[unrelated_detectors] {attack_kw['attack']} eps="
        f"{attack_kw['eps']} on {n} images: classifier accuracy "
        f"{adv_acc:.3f} ({times['adversarial_s']:.1f}s)")
    return x_det, t_det, val, adv_acc, n


def _fit_gong(classifier, x_det, t_det, val, gong_width, fit_kw, times,
              say):
    """The Gong binary CNN fitted on the images. Returns `(model,
    accuracies)`."""
    t0 = time.perf_counter()
    gong = gong_binary_cnn(tuple(classifier.input_shape[1:]),
                           width=gong_width)
    gong_acc = _fit_binary(gong, x_det, t_det, val, **fit_kw)
    times["gong_s"] = time.perf_counter() - t0
    say(f"[unrelated_detectors] gong: accuracy {gong_acc} "
        f"({times['gong_s']:.1f}s)")
    return gong, gong_acc


def _fit_metzen(classifier, x_det, t_det, val, metzen_layer,
                metzen_filters, metzen_pools, fit_kw, times, say):
    """The Metzen head fitted on the frozen classifier's `metzen_layer`
    features (computed once). Returns `(head, accuracies)`."""
    t0 = time.perf_counter()
    trunk = feature_model(classifier, [metzen_layer], name="metzen_trunk")
    feats = trunk.predict(x_det, batch_size=500, verbose=0)
    feats_val = None if val is None else (
        trunk.predict(val[0], batch_size=500, verbose=0), val[1])
    head = metzen_detector_head(feats.shape[1:], filters=metzen_filters,
                                pools=metzen_pools)
    metzen_acc = _fit_binary(head, feats, t_det, feats_val, **fit_kw)
    times["metzen_s"] = time.perf_counter() - t0
    say(f"[unrelated_detectors] metzen on {metzen_layer!r}: accuracy "
        f"{metzen_acc} ({times['metzen_s']:.1f}s)")
    return head, metzen_acc


def _kde_points(classifier, x_train, y_train, kde_per_class, num_classes,
                rng, kde_layer, times, say):
    """`(indices, kde_layer features)` of at most `kde_per_class`
    training images per class, the KDE's reference points."""
    t0 = time.perf_counter()
    kde_idx = _per_class_subsample(y_train, kde_per_class, num_classes, rng)
    hidden = feature_model(classifier, [kde_layer], name="kde_trunk")
    kde_features = hidden.predict(x_train[kde_idx], batch_size=500,
                                  verbose=0)
    times["kde_s"] = time.perf_counter() - t0
    say(f"[unrelated_detectors] kde on {kde_layer!r}: {len(kde_idx)} "
        f"reference points ({times['kde_s']:.1f}s)")
    return kde_idx, kde_features


def _fit_config(settings, adv_acc, gong_acc, metzen_acc, times, steps,
                step_size):
    """The system's training record: `settings`, accuracies, timings."""
    config = {**settings,
              "classifier_adversarial_accuracy": adv_acc,
              "train_accuracy": {"gong": gong_acc[0],
                                 "metzen": metzen_acc[0]},
              "times_s": {k: round(v, 2) for k, v in times.items()}}
    if settings["attack"] == "pgd":
        config.update(steps=steps,
                      step_size=float(step_size or settings["eps"] / 4))
    if gong_acc[1] is not None:
        config["val_accuracy"] = {"gong": gong_acc[1],
                                  "metzen": metzen_acc[1]}
    return config


def fit_unrelated_detectors(
        classifier: keras.Model, x_train: np.ndarray, y_train: np.ndarray,
        *, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
        seed: int = 0, num_train: int = 5000, attack: str = "fgsm",
        eps: float = 0.1, steps: int = 5, step_size: float | None = None,
        epochs: int = 3, batch_size: int = 128, learning_rate: float = 1e-3,
        kde_per_class: int = 500, bandwidth: float = MNIST_BANDWIDTH,
        metzen_layer: str = "pool2", kde_layer: str = "fc",
        gong_width: int = 16,
        metzen_filters: Sequence[int] = METZEN_FILTERS,
        metzen_pools: int = 1, verbose: int = 1) -> DetectionSystem:
    """Trains the Gong and Metzen detectors and sets up the KDE; the
    classifier is not changed. Defaults are scaled down from the papers'
    full-training-set runs to about a minute of CPU (module doc).

    Args:
        classifier: Functional Keras model, float32 images `(batch, H, W,
            C)` in `[0, 1]` -> logits `(batch, classes)`, with layers named
            `metzen_layer` and `kde_layer` (the Madry CNN's "pool2", "fc").
        x_train: float32 `(N, H, W, C)` in `[0, 1]`; y_train: int `(N,)`.
        x_val, y_val: optional held-out images and labels, never trained
            on: the detectors' accuracy on them and their adversarial
            examples goes to `config["val_accuracy"]`.
        seed: subsampling, PGD starts, initialization (it also calls
            `keras.utils.set_random_seed(seed)`).
        num_train: training images used for the two detectors (each gives
            one clean and one adversarial example), at most N.
        attack: "fgsm" or "pgd" (L-inf), the adversary the detectors learn.
        eps: its L-inf budget on the `[0, 1]` scale (0.1).
        steps, step_size: PGD only (default step `eps / 4`).
        epochs, batch_size, learning_rate: Adam training of both detectors.
        kde_per_class: KDE reference points per class (or all it has).
        bandwidth: KDE bandwidth (1.20, Feinman et al.'s MNIST value).
        metzen_layer, kde_layer: the layers the Metzen head and KDE read.
        gong_width: first-conv width of the Gong binary CNN.
        metzen_filters, metzen_pools: see `metzen_detector_head`.
        verbose: 0 silent, 1 prints each stage and its time.

    Returns:
        An uncalibrated `DetectionSystem` ("gong", "metzen", "kde"); its
        config records the settings, train/val accuracies and timings.

    Raises:
        ValueError: images not float in `[0, 1]` or labels not matching,
            `num_train` / `epochs` / `kde_per_class` < 1, an unknown
            `attack`, a layer name missing from the classifier, or a class
            without training images.
    """
    x_train, y_train = _check_fit_args(x_train, y_train, attack, num_train,
                                       epochs, kde_per_class, batch_size)
    num_classes = int(classifier.output_shape[-1])
    say = print if verbose else (lambda *a, **k: None)
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    times = {}
    attack_kw = dict(attack=attack, eps=eps, steps=steps,
                     step_size=step_size, seed=seed)
    x_det, t_det, val, adv_acc, n = _detector_data(
        classifier, x_train, y_train, x_val, y_val, rng, num_train,
        attack_kw, times, say)
    fit_kw = dict(epochs=epochs, batch_size=batch_size,
                  learning_rate=learning_rate, verbose=verbose)

    gong, gong_acc = _fit_gong(classifier, x_det, t_det, val, gong_width,
                               fit_kw, times, say)
    head, metzen_acc = _fit_metzen(classifier, x_det, t_det, val,
                                   metzen_layer, metzen_filters,
                                   metzen_pools, fit_kw, times, say)
    kde_idx, kde_features = _kde_points(classifier, x_train, y_train,
                                        kde_per_class, num_classes, rng,
                                        kde_layer, times, say)
    config = _fit_config(
        dict(attack=attack, eps=float(eps), num_train=n, epochs=epochs,
             batch_size=batch_size, learning_rate=float(learning_rate),
             kde_per_class=kde_per_class, seed=seed, gong_width=gong_width,
             metzen_filters=list(metzen_filters), metzen_pools=metzen_pools),
        adv_acc, gong_acc, metzen_acc, times, steps, step_size)
    return unrelated_detectors_system(
        classifier, gong, head, kde_features, y_train[kde_idx], bandwidth,
        metzen_layer=metzen_layer, kde_layer=kde_layer, config=config)
