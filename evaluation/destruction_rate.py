"""Destruction rate of adversarial examples under image transformations.

Kurakin, Goodfellow & Bengio 2017, "Adversarial examples in the physical
world", arXiv 1607.02533. Sec. 3.1 defines the destruction rate, the
fraction of adversarial images that a transformation `T` turns back into
correctly classified ones, counted only over images that were correct when
clean and wrong after the attack:

    d = sum_k C(x_k, y_k) (1 - C(x_adv_k, y_k)) C(T(x_adv_k), y_k)
        / sum_k C(x_k, y_k) (1 - C(x_adv_k, y_k)),

with `C(x, y) = 1` when the model classifies `x` as `y`. Sec. 4 measures it
under artificial transformations: change of brightness and contrast,
Gaussian blur, Gaussian noise and JPEG encoding; `resize` (down then back up)
is added here. A high destruction rate means the attack does not survive the
transformation; it says nothing about an attacker who adapts to it.

Every transform maps float32 `(batch, height, width, channels)` images in
[0, 1] to a float32 NumPy array of the same shape in [0, 1].
"""

from __future__ import annotations

import inspect
import io
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.ndimage
from keras import ops

from attacks.primitives import call_model


def _images(x: Any, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"{name} must be a float (batch, height, width, channels) array; "
            f"got dtype {x.dtype} and shape {x.shape}")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(f"{name} must lie in [0, 1]; got values in "
                         f"[{x.min():.4g}, {x.max():.4g}]")
    return x.astype(np.float32)


def _check(name: str, value: Any, ok: bool, accepted: str) -> None:
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{name} must be {accepted}; got {value!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating))


def jpeg(x: Any, *, quality: int, chroma_downsampling: bool = True
         ) -> np.ndarray:
    """JPEG encoding and decoding of each image (libjpeg through Pillow,
    baseline, standard tables; decoded with the accurate integer DCT).

    Args:
        x: float `(batch, height, width, channels)` in [0, 1], with 1
            (grayscale) or 3 (RGB) channels; rounded to 8 bits first.
        quality: JPEG quality, int in [1, 100].
        chroma_downsampling: 4:2:0 chroma subsampling of RGB images, the
            libjpeg and PIL default; False keeps full-resolution color.

    Returns:
        float32 array, the shape of `x`, in [0, 1] (multiples of 1/255).

    Raises:
        ValueError: bad `quality` or `chroma_downsampling`, `x` not 4-D in
            [0, 1], or a channel count other than 1 or 3.
    """
    _check("quality", quality,
           isinstance(quality, (int, np.integer)) and 1 <= quality <= 100,
           "an int in [1, 100]")
    if not isinstance(chroma_downsampling, bool):
        raise ValueError(f"chroma_downsampling must be True or False; got "
                         f"{chroma_downsampling!r}")
    x = _images(x)
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"jpeg needs 1 or 3 channels; got {x.shape[-1]}")
    pixels = np.round(x * np.float32(255.0)).astype(np.uint8)
    out = np.stack([_jpeg_round_trip(image, int(quality),
                                     chroma_downsampling)
                    for image in pixels]) if len(pixels) else pixels
    return out.astype(np.float32) / np.float32(255.0)


def _jpeg_round_trip(image: np.ndarray, quality: int,
                     chroma_downsampling: bool) -> np.ndarray:
    """One uint8 `(height, width, 1 or 3)` image encoded (baseline,
    4:2:0 or 4:4:4 chroma) and decoded back with Pillow."""
    from PIL import Image  # Pillow: a dependency of matplotlib

    gray = image.shape[-1] == 1
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if gray else image).save(
        buffer, format="JPEG", quality=quality,
        subsampling=2 if chroma_downsampling else 0)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = np.asarray(decoded.convert("L" if gray else "RGB"))
    return out[..., None] if gray else out


def blur(x: Any, *, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel (`scipy.ndimage.gaussian_filter` over
    height and width, mirror-reflected borders, kernel cut at 4 sigma).

    Args:
        x: float `(batch, height, width, channels)` in [0, 1].
        sigma: standard deviation in pixels, >= 0; 0 returns `x` unchanged.

    Returns:
        float32 array, the shape of `x`, in [0, 1].

    Raises:
        ValueError: bad `sigma` or `x`.
    """
    _check("sigma", sigma, _is_number(sigma) and sigma >= 0, "a number >= 0")
    x = _images(x)
    out = scipy.ndimage.gaussian_filter(
        x, sigma=(0, float(sigma), float(sigma), 0), mode="reflect")
    return np.clip(out, 0.0, 1.0)


def noise(x: Any, *, sigma: float, seed: int = 0) -> np.ndarray:
    """Additive Gaussian noise, clipped to [0, 1].

    Args:
        x: float `(batch, height, width, channels)` in [0, 1].
        sigma: standard deviation on the [0, 1] pixel scale, >= 0 (e.g.
            `10 / 255`); 0 returns `x` unchanged.
        seed: seed of the NumPy generator (the same seed gives the same
            noise).

    Returns:
        float32 array, the shape of `x`, in [0, 1].

    Raises:
        ValueError: bad `sigma`, `seed` or `x`.
    """
    _check("sigma", sigma, _is_number(sigma) and sigma >= 0, "a number >= 0")
    _check("seed", seed, isinstance(seed, (int, np.integer)), "an int")
    x = _images(x)
    if sigma == 0:
        return x.copy()
    rng = np.random.default_rng(int(seed))
    out = x + rng.normal(0.0, float(sigma), x.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def brightness_contrast(x: Any, *, brightness: float = 0.0,
                        contrast: float = 1.0) -> np.ndarray:
    """`clip(x * contrast + brightness, 0, 1)`, the brightness and contrast
    change of Kurakin et al. 2017 (Sec. 4), on the [0, 1] scale.

    Args:
        x: float `(batch, height, width, channels)` in [0, 1].
        brightness: additive shift in [-1, 1] (e.g. `10 / 255`).
        contrast: multiplicative factor, >= 0.

    Returns:
        float32 array, the shape of `x`, in [0, 1]; `x` itself for
        brightness 0 and contrast 1.

    Raises:
        ValueError: bad `brightness`, `contrast` or `x`.
    """
    _check("brightness", brightness,
           _is_number(brightness) and -1 <= brightness <= 1,
           "a number in [-1, 1]")
    _check("contrast", contrast, _is_number(contrast) and contrast >= 0,
           "a number >= 0")
    x = _images(x)
    out = x * np.float32(contrast) + np.float32(brightness)
    return np.clip(out, 0.0, 1.0)


def resize(x: Any, *, scale: float) -> np.ndarray:
    """Downscale by `scale` (bilinear, antialiased) and back up to the
    original size (bilinear), with `keras.ops.image.resize`.

    Args:
        x: float `(batch, height, width, channels)` in [0, 1].
        scale: in (0, 1]; the small side is `round(size * scale)`, at least
            1 pixel. When that equals the original size (e.g. scale 1),
            `x` is returned unchanged.

    Returns:
        float32 array, the shape of `x`, in [0, 1].

    Raises:
        ValueError: bad `scale` or `x`.
    """
    _check("scale", scale, _is_number(scale) and 0 < scale <= 1,
           "a number in (0, 1]")
    x = _images(x)
    height, width = x.shape[1:3]
    small = (max(1, round(height * scale)), max(1, round(width * scale)))
    if small == (height, width):
        return x.copy()
    down = ops.image.resize(x, small, interpolation="bilinear",
                            antialias=True)
    up = ops.image.resize(down, (height, width), interpolation="bilinear")
    return np.clip(ops.convert_to_numpy(up), 0.0, 1.0)


TRANSFORMS: dict[str, Callable[..., np.ndarray]] = {
    "brightness_contrast": brightness_contrast,
    "blur": blur,
    "jpeg": jpeg,
    "noise": noise,
    "resize": resize,
}

# A grid of our choosing over the kinds of strengths of Kurakin et al.'s
# Sec. 4 (which states brightness and noise on the 0-255 scale); not a copy
# of the paper's exact values.
DEFAULT_SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    *(("jpeg", {"quality": q}) for q in (10, 30, 50, 75, 90)),
    *(("blur", {"sigma": s}) for s in (0.5, 1.0, 2.0)),
    *(("noise", {"sigma": s / 255}) for s in (5, 10, 20, 40)),
    *(("brightness_contrast", {"brightness": b / 255})
      for b in (-30, -10, 10, 30)),
    *(("brightness_contrast", {"contrast": c}) for c in (0.7, 0.8, 1.2, 1.3)),
    *(("resize", {"scale": s}) for s in (0.5, 0.75)),
)


def apply_transform(x: Any, transform: str, **params: Any) -> np.ndarray:
    """`TRANSFORMS[transform](x, **params)`, with the name and the parameter
    names checked first.

    Raises:
        ValueError: unknown `transform` (the message lists `TRANSFORMS`), a
            parameter it does not accept or a missing required one (the
            message lists the accepted ones), or a bad value.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; available: "
                         f"{sorted(TRANSFORMS)}")
    fn = TRANSFORMS[transform]
    signature = inspect.signature(fn).parameters
    accepted = [p for p in signature if p != "x"]
    unknown = sorted(set(params) - set(accepted))
    missing = [p for p in accepted if p not in params
               and signature[p].default is inspect.Parameter.empty]
    if unknown or missing:
        raise ValueError(
            f"transform {transform!r} got unknown parameters {unknown} and "
            f"is missing {missing}; accepted: {accepted}")
    return fn(x, **params)


def _labels(model: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
    out = [ops.convert_to_numpy(ops.argmax(call_model(
        model, ops.convert_to_tensor(x[i:i + batch_size])), axis=-1))
        for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros([0], np.int64)


def _inputs(x, x_adv, y, batch_size):
    x, x_adv = _images(x), _images(x_adv, "x_adv")
    y = np.asarray(y)
    if x.shape != x_adv.shape or y.shape != x.shape[:1]:
        raise ValueError(
            f"x and x_adv must have the same (batch, height, width, channels)"
            f" shape and y the shape (batch,); got {x.shape}, {x_adv.shape} "
            f"and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold int labels; got dtype {y.dtype}")
    _check("batch_size", batch_size,
           isinstance(batch_size, (int, np.integer)) and batch_size > 0,
           "a positive int")
    return x, x_adv, y


def _row(transform, params, attacked, pred_t, y):
    numerator = int(np.sum(attacked & (pred_t == y)))
    denominator = int(np.sum(attacked))
    return {"transform": transform, "params": dict(params),
            "rate": numerator / denominator if denominator else None,
            "numerator": numerator, "denominator": denominator}


def destruction_table(
    model: Callable, x: Any, x_adv: Any, y: Any,
    settings: Sequence[tuple[str, Mapping[str, Any]]] | None = None, *,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Destruction rates (Kurakin et al. 2017, arXiv 1607.02533, Sec. 3.1)
    for several transforms, predicting on `x` and `x_adv` once.

    Args:
        model: Keras model (called with `training=False`) or callable mapping
            float32 `(batch, height, width, channels)` in [0, 1] to logits
            `(batch, classes)`.
        x: clean images, float `(batch, height, width, channels)` in [0, 1].
        x_adv: their adversarial versions, same shape, in [0, 1].
        y: true labels, int `(batch,)`.
        settings: `(transform, params)` pairs, e.g. `[("jpeg", {"quality":
            75}), ("blur", {"sigma": 1.0})]`; default `DEFAULT_SETTINGS`.
            Every setting is checked before any is run.
        batch_size: images per model call.

    Returns:
        One dict per setting, in order: `transform`, `params`, `rate` (float
        in [0, 1], or None when the denominator is 0, i.e. no image was
        correct clean and wrong adversarially), `numerator`, `denominator`.

    Raises:
        ValueError: unknown transform or parameter, bad parameter value,
            images not 4-D in [0, 1], mismatched shapes, non-int `y`.
    """
    x, x_adv, y = _inputs(x, x_adv, y, batch_size)
    settings = DEFAULT_SETTINGS if settings is None else tuple(settings)
    for transform, params in settings:  # fail before any work
        apply_transform(x_adv[:1], transform, **params)
    attacked = ((_labels(model, x, batch_size) == y)
                & (_labels(model, x_adv, batch_size) != y))
    rows = []
    for transform, params in settings:
        x_t = apply_transform(x_adv, transform, **params)
        rows.append(_row(transform, params, attacked,
                         _labels(model, x_t, batch_size), y))
    return rows


def destruction_rate(model: Callable, x: Any, x_adv: Any, y: Any,
                     transform: str, *, batch_size: int = 256,
                     **params: Any) -> dict[str, Any]:
    """The destruction rate `d` of one transform (Kurakin et al. 2017,
    arXiv 1607.02533, Sec. 3.1; transforms of Sec. 4).

    Args:
        model, x, x_adv, y, batch_size: as in `destruction_table`.
        transform: a name in `TRANSFORMS`: "brightness_contrast", "blur",
            "jpeg", "noise", "resize".
        **params: the transform's parameters, e.g. `quality=75`.

    Returns:
        dict with `transform`, `params`, `rate` (None, not NaN, when the
        denominator is 0), `numerator` (images correct clean, wrong
        adversarial, correct after `transform`) and `denominator` (images
        correct clean and wrong adversarial).

    Raises:
        ValueError: as `destruction_table`.

    Example:
        >>> x_adv = attacks.get_attack("fgsm")(model, x, y, eps=0.1)
        >>> destruction_rate(model, x, x_adv, y, "jpeg", quality=75)
        {'transform': 'jpeg', 'params': {'quality': 75}, 'rate': ..., ...}
    """
    return destruction_table(model, x, x_adv, y, [(transform, params)],
                             batch_size=batch_size)[0]


__all__ = [
    "DEFAULT_SETTINGS", "TRANSFORMS", "apply_transform", "blur",
    "brightness_contrast", "destruction_rate", "destruction_table", "jpeg",
    "noise", "resize",
]
