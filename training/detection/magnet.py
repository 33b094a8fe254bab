"""Trains MagNet's two autoencoders (Meng & Chen 2017, arXiv 1705.09064).

Settings of the paper's MNIST defense (Sec. 5) and of the authors'
`train_defense.py` / `defensive_models.py`: each autoencoder is a denoising
one, fit with MSE by Adam on clean training images to which Gaussian noise
of standard deviation ("volume") 0.1 is added, clipped to [0, 1] and drawn
once before training; L2 activity regularization 1e-9 on every conv.
Clean held-out images, if given, are the validation set (their
reconstruction MSE), as in the authors' code. The labels are not used (the
autoencoders are unsupervised); the classifier is not trained.

Scaled down for a CPU budget of about a minute or two: the authors train
100 epochs of 50k images at batch 256 with Adam's default learning rate
1e-3 (some 20k steps); the defaults here are 3 epochs of at most 10k
images at batch 64 with learning rate 1e-2 (some 470 steps), which gets
past the sigmoid autoencoders' initial plateau (at batch 256 and 1e-3 a
few hundred steps leave them near the mean image).
"""

from __future__ import annotations

import time
from typing import Sequence

import keras
import numpy as np

from models.detection.detection_system import DetectionSystem
from models.detection.magnet import magnet_autoencoder, magnet_system


def _check_images(x, what):
    x = np.asarray(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} must be float images (N, H, W, C); got "
                         f"dtype {x.dtype} shape {x.shape}")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(f"{what} must lie in [0, 1]; got values in "
                         f"[{x.min():.3g}, {x.max():.3g}]")
    return x.astype("float32", copy=False)


def fit_autoencoder(ae: keras.Model, x_train: np.ndarray, *,
                    x_val: np.ndarray | None = None, noise_std: float = 0.1,
                    epochs: int = 100, batch_size: int = 256,
                    learning_rate: float = 1e-3, seed: int = 0,
                    verbose: int = 1) -> keras.callbacks.History:
    """Fits `ae` to map `clip(x + noise_std * N(0, 1), 0, 1)` to `x` (MSE,
    Adam), as Meng & Chen 2017 (arXiv 1705.09064, Sec. 5) train MagNet's
    autoencoders.

    Args:
        ae: images -> images of the same shape.
        x_train: float32 `(N, H, W, C)` in `[0, 1]`.
        x_val: None or held-out clean images (validation MSE).
        noise_std: standard deviation of the training noise, >= 0.
        epochs, batch_size: of `model.fit`, >= 1.
        learning_rate: Adam's, > 0.
        seed: int; the noise draw and the batch order.
        verbose: `model.fit`'s verbosity.

    Returns:
        The `keras.callbacks.History`.

    Raises:
        ValueError: images not float `(N, H, W, C)` in `[0, 1]`, or a
            negative `noise_std`.
    """
    x_train = _check_images(x_train, "x_train")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std!r}")
    rng = np.random.default_rng(seed)
    noisy = np.clip(x_train + noise_std * rng.standard_normal(
        x_train.shape, dtype=np.float32), 0.0, 1.0)
    ae.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    val = None if x_val is None else (_check_images(x_val, "x_val"),) * 2
    keras.utils.set_random_seed(seed)  # the shuffling of model.fit
    return ae.fit(noisy, x_train, batch_size=batch_size, epochs=epochs,
                  validation_data=val, shuffle=True, verbose=verbose)


def fit_magnet(classifier: keras.Model, x_train: np.ndarray,
               y_train: np.ndarray | None = None, *,
               x_val: np.ndarray | None = None,
               y_val: np.ndarray | None = None, seed: int = 0,
               epochs: int = 3, batch_size: int = 64,
               max_train: int | None = 10000,
               noise_std: float = 0.1, activity_l2: float = 1e-9,
               learning_rate: float = 1e-2,
               temperatures: Sequence[float] = (10, 40),
               verbose: int = 1) -> DetectionSystem:
    """Trains MagNet's autoencoders I and II and assembles the system.

    Args:
        classifier: float32 images `(batch, H, W, C)` in `[0, 1]` -> logits;
            not modified.
        x_train: float32 `(N, H, W, C)` clean training images in `[0, 1]`.
        y_train, y_val: unused (unsupervised autoencoders); accepted for the
            uniform `fit_X` signature.
        x_val: None or clean held-out images for the validation loss (not
            the calibration images).
        seed: int; initialization, noise and batch order.
        epochs: per autoencoder (the paper: 100).
        batch_size: of `model.fit` (the authors: 256).
        max_train: train on a random subset of at most this many images of
            `x_train` (None: all of them).
        noise_std: training noise volume (0.1).
        activity_l2: L2 activity regularization (1e-9).
        learning_rate: Adam's (the authors: Keras's default 1e-3).
        temperatures: of the divergence detectors (see `magnet_system`;
            `()` is the paper's MNIST defense).
        verbose: `model.fit`'s verbosity; >= 1 also prints timings.

    Returns:
        The uncalibrated `DetectionSystem` of `magnet_system`, with
        `config["training"]` holding these settings, final losses and
        seconds.

    Raises:
        ValueError: bad images (not float `(N, H, W, C)` in `[0, 1]`), a
            negative `noise_std`, or a shape the classifier does not take.
    """
    del y_train, y_val
    x_train = _check_images(x_train, "x_train")
    shape = tuple(classifier.input_shape[1:])
    if x_train.shape[1:] != shape:
        raise ValueError(f"x_train images must have the classifier's shape "
                         f"{shape}; got {x_train.shape[1:]}")
    if max_train is not None and len(x_train) > max_train:
        keep = np.random.default_rng(seed).choice(len(x_train), max_train,
                                                  replace=False)
        x_train = x_train[np.sort(keep)]
    aes, log = [], {}
    for i, structure in enumerate(("I", "II"), start=1):
        keras.utils.set_random_seed(seed + i)  # initialization
        ae = magnet_autoencoder(structure, shape, activity_l2)
        start = time.perf_counter()
        hist = fit_autoencoder(ae, x_train, x_val=x_val,
                               noise_std=noise_std, epochs=epochs,
                               batch_size=batch_size,
                               learning_rate=learning_rate, seed=seed + i,
                               verbose=verbose)
        seconds = time.perf_counter() - start
        log[f"autoencoder_{i}"] = {
            "seconds": round(seconds, 1),
            **{k: float(v[-1]) for k, v in hist.history.items()}}
        if verbose:
            print(f"MagNet autoencoder {structure}: {epochs} epochs in "
                  f"{seconds:.1f} s, {log[f'autoencoder_{i}']}")
        aes.append(ae)
    system = magnet_system(classifier, aes[0], aes[1], temperatures)
    system.config["training"] = {
        "epochs": epochs, "batch_size": batch_size, "noise_std": noise_std,
        "max_train": max_train,
        "activity_l2": activity_l2, "learning_rate": learning_rate,
        "seed": seed, "num_train": int(len(x_train)), **log}
    return system
