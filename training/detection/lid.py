"""Fits the LID detector (Ma et al. 2018, ICLR, arXiv 1801.02613, Sec. 4).

Algorithm 1 of the paper, with the fixed reference batch of
`models.detection.lid`:

1. `reference_size` (100, the paper's minibatch) clean training images,
   drawn at random, become the reference batch;
2. of the other training images (at most `max_train`, drawn at random),
   those the classifier gets right (the authors' `extract_characteristics
   .py` keeps only those) are the clean examples;
   each gets an adversarial example from `attack` run on the classifier
   and a noisy one: Gaussian noise rescaled per image to the L2 norm of
   that image's adversarial perturbation, clipped to [0, 1] (the paper's
   noisy examples have the adversarial examples' L2 distortion; the authors
   tuned one noise scale per attack to match it on average);
3. the LID of each example at each layer, against the reference, with
   k = 20 neighbours (the authors' default on MNIST);
4. scikit-learn's `LogisticRegressionCV` on standardized features,
   adversarial = 1, clean and noisy = 0 (the authors' code min-max scales
   the features; standardization is used here).
"""

from __future__ import annotations

import inspect
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from models.detection.detection_system import DetectionSystem
from models.detection.lid import (default_layer_names, lid_feature_model,
                                  lid_system)

# The project's Fashion-MNIST PGD (L-inf eps 0.1, the evaluation setting of
# recipes/standard_cnn_fmnist), shortened to 10 steps for the CPU budget,
# with Madry et al.'s step size 2.5 * eps / steps.
DEFAULT_ATTACK = {"name": "pgd", "eps": 0.1, "step_size": 0.025,
                  "steps": 10}


def _attack_fn(attack, seed) -> Callable[..., Any]:
    import attacks

    if callable(attack):
        return attack
    config = dict(DEFAULT_ATTACK if attack is None else attack)
    fn = attacks.from_config(config)
    if "seed" not in config and "seed" in inspect.signature(
            attacks.get_attack(config["name"])).parameters:
        fn = attacks.from_config({**config, "seed": seed})
    return fn


def _check(x, y, what):
    if y is None:
        raise ValueError(f"{what} needs its labels; got None")
    x = np.asarray(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating) or \
            x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"{what} must be float images (N, H, W, C) in "
                         f"[0, 1]; got dtype {x.dtype} shape {x.shape}")
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{what} has {len(x)} images but {len(y)} labels")
    return x.astype("float32", copy=False), y.astype("int32")


def adversarial_and_noisy(classifier, x, y, attack_fn, rng, batch_size=256):
    """`(x_adv, x_noisy)` for clean `x`: the attack's examples, and Gaussian
    noise with each image's adversarial L2 distortion, clipped to [0, 1]."""
    x_adv = np.concatenate([
        keras.ops.convert_to_numpy(attack_fn(classifier, x[i:i + batch_size],
                                             y[i:i + batch_size]))
        for i in range(0, len(x), batch_size)]).astype("float32")
    dist = np.sqrt(np.sum((x_adv - x) ** 2, axis=(1, 2, 3), keepdims=True))
    noise = rng.standard_normal(x.shape).astype("float32")
    noise *= dist / np.sqrt(np.sum(noise ** 2, axis=(1, 2, 3), keepdims=True))
    return x_adv, np.clip(x + noise, 0.0, 1.0)


def _auc(scores_neg, scores_pos):
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(scores_neg)), np.ones(len(scores_pos))]
    return float(roc_auc_score(labels, np.r_[scores_neg, scores_pos]))


def _regression(f_clean, f_noisy, f_adv):
    """StandardScaler + LogisticRegressionCV, adversarial = 1; returns
    `(scaler, regression, log of training AUCs and C)`."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    feats = np.concatenate([f_clean, f_noisy, f_adv])
    labels = np.r_[np.zeros(len(f_clean) + len(f_noisy)), np.ones(len(f_adv))]
    scaler = StandardScaler().fit(feats)
    with warnings.catch_warnings():
        # scikit-learn >= 1.8 announces changes of defaults we do not use.
        warnings.simplefilter("ignore", FutureWarning)
        reg = LogisticRegressionCV(max_iter=1000).fit(
            scaler.transform(feats), labels)
    score = [reg.decision_function(scaler.transform(f))
             for f in (f_clean, f_noisy, f_adv)]
    return scaler, reg, {"auc_train": _auc(score[0], score[2]),
                         "auc_train_noisy": _auc(score[1], score[2]),
                         "C": float(np.ravel(reg.C_)[0]),
                         "num_train": int(len(f_clean))}


def _split_train(classifier, x_train, y_train, rng, reference_size,
                 max_train):
    """`(reference images, x, y)`: a random reference batch, and at most
    `max_train` other training images the classifier gets right.

    Raises:
        ValueError: bad images, `N <= reference_size`, or fewer than 10
            correctly classified images.
    """
    x_train, y_train = _check(x_train, y_train, "x_train")
    if len(x_train) <= reference_size:
        raise ValueError(f"x_train must have more than reference_size="
                         f"{reference_size} images; got {len(x_train)}")
    perm = rng.permutation(len(x_train))
    reference = x_train[perm[:reference_size]]
    rest = perm[reference_size:]
    rest = rest if max_train is None else rest[:max_train]
    x, y = x_train[rest], y_train[rest]
    right = np.argmax(classifier.predict(x, batch_size=256, verbose=0),
                      -1) == y
    x, y = x[right], y[right]
    if len(x) < 10:
        raise ValueError(f"only {len(x)} training images are classified "
                         "correctly; LID needs at least 10")
    return reference, x, y


def fit_lid(classifier: keras.Model, x_train: np.ndarray,
            y_train: np.ndarray, *, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, seed: int = 0,
            layer_names: Sequence[str] | None = None, k: int = 20,
            reference_size: int = 100, max_train: int | None = 500,
            attack: Mapping[str, Any] | Callable[..., Any] | None = None,
            zero_rtol: float = 1e-5, verbose: int = 1) -> DetectionSystem:
    """Fits the LID logistic regression and assembles the system.

    Args:
        classifier: a Functional model, float32 images `(batch, H, W, C)` in
            `[0, 1]` -> logits; not modified.
        x_train: float32 `(N, H, W, C)` clean images in `[0, 1]`, N >
            `reference_size`.
        y_train: int `(N,)` labels.
        x_val, y_val: None, or held-out clean images and labels on which
            the detector's AUC against the same attack is reported (in
            `config["training"]`).
        seed: int; the reference draw, the noise and the attack's start.
        layer_names: classifier layers (default `default_layer_names`).
        k: neighbours (20), < `reference_size`.
        reference_size: the reference batch (100).
        max_train: at most this many of the other training images (drawn
            at random) are attacked and fit the regression (None: all);
            500 keep the default PGD on the Madry CNN near a minute of CPU.
        attack: an attack config for `attacks.from_config` (default
            `DEFAULT_ATTACK`, PGD L-inf eps 0.1), or a callable
            `fn(model, x, y) -> x_adv`.
        zero_rtol: see `models.detection.lid.LocalIntrinsicDimensionality`.
        verbose: >= 1 prints timings and AUCs.

    Returns:
        The uncalibrated `DetectionSystem` of `lid_system`; its
        `config["training"]` holds the settings, training AUC (adversarial
        vs clean), the regression's C and seconds per stage.

    Raises:
        ValueError: bad images or labels, `N <= reference_size`, or fewer
            than 10 correctly classified training images.
        KeyError: an unknown attack name.
    """
    names = list(layer_names or default_layer_names(classifier))
    attack_fn, rng, times = _attack_fn(attack, seed), \
        np.random.default_rng(seed), {}
    reference, x, y = _split_train(classifier, x_train, y_train, rng,
                                   reference_size, max_train)
    start = time.perf_counter()
    x_adv, x_noisy = adversarial_and_noisy(classifier, x, y, attack_fn, rng)
    times["attack_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    features = lid_feature_model(classifier, names, reference, k, zero_rtol)
    f_clean, f_noisy, f_adv = (features.predict(v, batch_size=100, verbose=0)
                               for v in (x, x_noisy, x_adv))
    times["lid_seconds"] = round(time.perf_counter() - start, 1)
    scaler, reg, log = _regression(f_clean, f_noisy, f_adv)
    system = lid_system(classifier, names, reference, k, scaler, reg.coef_,
                        reg.intercept_, zero_rtol)
    log.update(times)
    if x_val is not None:
        xv, yv = _check(x_val, y_val, "x_val")
        xv_adv, _ = adversarial_and_noisy(classifier, xv, yv, attack_fn, rng)
        log["auc_val"] = _auc(system.scores(xv)[:, 0],
                              system.scores(xv_adv)[:, 0])
    if verbose:
        print(f"LID detector: {log}")
    system.config["training"] = {
        "attack": "callable" if callable(attack) else dict(
            DEFAULT_ATTACK if attack is None else attack),
        "seed": seed, "max_train": max_train,
        "noisy": "gaussian, L2 matched per image", **log}
    return system
