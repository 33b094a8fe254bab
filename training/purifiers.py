"""Builds the input-purification layers of the defense stage, training the
generative model first where the defense has one.

`build_purifier(name, x_train, seed=..., **kwargs)` returns the layer that
`training.defense_stage` puts in front of the classifier:

- "jpeg": `layers.JpegCompression(quality)` (Guo et al. 2018, arXiv
  1711.00117, Sec. 3.4);
- "tv_minimization": `layers.TotalVariationMinimization(drop_prob,
  tv_weight, steps)` (Sec. 3.2);
- "image_quilting": `layers.ImageQuilting.from_images(x_train, ...)`, a
  patch database of clean training images (Sec. 3.3);
- "defense_gan": a DCGAN trained on `x_train` (`training.gan.fit_gan`),
  then `layers.DefenseGanProjection(generator, steps, restarts,
  learning_rate)` (Samangouei et al. 2018, arXiv 1805.06605);
- "pixel_defend": a PixelCNN trained on `x_train`
  (`training.pixelcnn.fit_pixelcnn`), then `layers.PixelDefend(pixelcnn,
  eps_defend)` (Song et al. 2018, arXiv 1710.10766, Algorithm 1).

Keyword arguments go to the layer or to the fit function, split by name
(`FIT_KWARGS`).
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
import numpy as np

#: Keyword arguments that go to the generative model's fit function.
FIT_KWARGS = {
    "defense_gan": ("latent_dim", "epochs", "batch_size", "width",
                    "gan_learning_rate"),
    "pixel_defend": ("epochs", "batch_size", "filters", "num_layers",
                     "levels", "pcnn_learning_rate"),
}


def _split(name: str, kwargs: dict) -> tuple[dict, dict]:
    fit = {k: kwargs.pop(k) for k in FIT_KWARGS.get(name, ()) if k in kwargs}
    for old, new in (("gan_learning_rate", "learning_rate"),
                     ("pcnn_learning_rate", "learning_rate")):
        if old in fit:
            fit[new] = fit.pop(old)
    return fit, kwargs


def _check_kwargs(fn, kwargs: dict, what: str) -> None:
    accepted = set(inspect.signature(fn).parameters) - {"self", "kwargs"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"recipe field defense.fit has {unknown}, which "
                         f"{what} does not accept; accepted: "
                         f"{sorted(accepted)}")


def build_purifier(name: str, x_train: np.ndarray, *, seed: int = 0,
                   verbose: int = 2, **kwargs: Any) -> keras.layers.Layer:
    """The purifier layer `name` (module doc), trained on `x_train` where
    it has a generative model.

    Args:
        name: one of `recipes.ranges.PURIFIERS`.
        x_train: float32 `(N, 28, 28, 1)` in `[0, 1]`, clean images.
        seed: seed of the layer's randomness and of any training.
        **kwargs: the layer's and the fit function's settings.

    Raises:
        ValueError: unknown name, or a keyword argument neither accepts.
    """
    import layers

    fit, kwargs = _split(name, dict(kwargs))
    if name == "jpeg":
        _check_kwargs(layers.JpegCompression.__init__, kwargs, name)
        return layers.JpegCompression(**kwargs)
    if name == "tv_minimization":
        _check_kwargs(layers.TotalVariationMinimization.__init__, kwargs,
                      name)
        return layers.TotalVariationMinimization(seed=seed, **kwargs)
    if name == "image_quilting":
        _check_kwargs(layers.ImageQuilting.from_images, kwargs, name)
        return layers.ImageQuilting.from_images(x_train, seed=seed, **kwargs)
    if name == "defense_gan":
        from training.gan import fit_gan

        _check_kwargs(layers.DefenseGanProjection.__init__, kwargs, name)
        generator, _ = fit_gan(x_train, seed=seed, verbose=verbose, **fit)
        return layers.DefenseGanProjection(generator, seed=seed, **kwargs)
    if name == "pixel_defend":
        from training.pixelcnn import fit_pixelcnn

        _check_kwargs(layers.PixelDefend.__init__, kwargs, name)
        pcnn, _ = fit_pixelcnn(x_train, seed=seed, verbose=verbose, **fit)
        return layers.PixelDefend(pcnn, **kwargs)
    raise ValueError(f"defense.name={name!r} is not a purifier; expected "
                     "one of ['jpeg', 'tv_minimization', 'image_quilting', "
                     "'defense_gan', 'pixel_defend']")
