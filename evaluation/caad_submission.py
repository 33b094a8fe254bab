"""Defense submission mode of the NIPS 2017 / CAAD competitions.

The NIPS'17 adversarial competition (Kurakin et al. 2018, "Adversarial
Attacks and Defences Competition", arXiv 1804.00097), whose format CAAD 2018
inherited, runs a defense as `run_defense.sh INPUT_DIR OUTPUT_FILE`: it
classifies every PNG image in INPUT_DIR and writes one `filename,label` line
per image, with no header (the dev toolkit's sample defenses write
`'{0},{1}\\n'.format(filename, label)`). Its Inception models use the
1001-class TF-slim indexing, with 0 = background, hence `label_offset`.

`predict_directory` is that entry point for a Keras model trained here.
Xie et al. 2019 (arXiv 1812.03411) used the same path for their CAAD 2018
submission (resizing naively to the model's input size).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import numpy as np
from keras import ops

from attacks.primitives import call_model
from core import atomic_write

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _list_pngs(input_dir: str | os.PathLike) -> list[Path]:
    folder = Path(input_dir)
    if not folder.is_dir():
        raise ValueError(f"input_dir {str(folder)!r} is not a directory")
    paths = sorted((p for p in folder.iterdir()
                    if p.suffix.lower() == ".png" and p.is_file()),
                   key=lambda p: p.name)
    if not paths:
        raise ValueError(f"input_dir {str(folder)!r} holds no *.png files")
    return paths


def _model_input(model, image_size, channels):
    """(height, width) or None, and the channel count the model takes."""
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        raise ValueError(f"the model must take one image input; it takes "
                         f"{len(shape)} inputs")
    model_size = tuple(shape[1:3]) if shape and len(shape) == 4 else None
    model_channels = shape[-1] if shape and len(shape) == 4 else None
    if isinstance(image_size, (int, np.integer)) and not isinstance(
            image_size, bool):
        image_size = (int(image_size), int(image_size))
    if image_size is not None and (
            len(image_size) != 2 or not all(
                isinstance(s, (int, np.integer)) and s > 0
                for s in image_size)):
        raise ValueError(f"image_size must be None, a positive int or a "
                         f"(height, width) pair; got {image_size!r}")
    size = tuple(image_size) if image_size is not None else model_size
    if model_size and None not in model_size and size != model_size:
        raise ValueError(f"image_size {image_size!r} differs from the "
                         f"model's input size {model_size}")
    if size is not None and None in size:
        size = None  # fully convolutional model: images keep their size
    if channels is None:
        channels = model_channels
    if channels not in (1, 3) or (model_channels not in (None, channels)):
        raise ValueError(
            f"channels must be 1 or 3 and match the model's input "
            f"({model_channels}); got {channels!r}"
            + (" (pass channels= for a model without input_shape)"
               if channels is None else ""))
    return size, channels


def _decode_png(path: Path, data: bytes) -> np.ndarray:
    """The pixels of PNG bytes as uint8 `(height, width, channels)`, with
    Pillow (a dependency of matplotlib): 1, 2 or 4-bit gray is scaled to 8
    bits, 16-bit samples keep their high byte, palettes become RGB (RGBA
    with transparency), as libpng's 8-bit decoding does."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
            return _to_uint8(image)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode PNG {str(path)!r}: {e}")


def _to_uint8(image) -> np.ndarray:
    """A decoded Pillow image as uint8 `(height, width, channels)`."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray
        pixels = np.asarray(image, dtype=np.uint32) >> 8
        return pixels.astype(np.uint8)[..., None]
    if image.mode == "P":
        image = image.convert(
            "RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _load(path: Path, size, channels) -> np.ndarray:
    """One PNG as float32 (height, width, channels) in [0, 1]."""
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"{str(path)!r} is not a PNG file (bad signature)")
    image = _decode_png(path, data).astype(np.float32) / np.float32(255.0)
    have = image.shape[-1]
    if have == 3 and channels == 1:
        image = ops.image.rgb_to_grayscale(image)
    elif have == 1 and channels == 3:
        image = ops.repeat(image, 3, axis=-1)
    elif have != channels:
        raise ValueError(
            f"{str(path)!r} has {have} channels; the model takes {channels}"
            f" (1 or 3 channel PNGs are converted; convert others, e.g. "
            f"RGBA, to RGB first)")
    if size is not None and tuple(image.shape[:2]) != size:
        # Naive resize, aspect ratio not kept (as Xie et al.'s CAAD path).
        image = ops.image.resize(image, size, interpolation="bilinear",
                                 antialias=True)
        image = ops.clip(image, 0.0, 1.0)
    return ops.convert_to_numpy(image)


def _check_int(name, value, low=None):
    if isinstance(value, bool) or not isinstance(
            value, (int, np.integer)) or (low is not None and value < low):
        bound = "" if low is None else f" >= {low}"
        raise ValueError(f"{name} must be an int{bound}; got {value!r}")


def _check_output(output_csv) -> Path:
    """`output_csv` as a Path, after checking that it does not exist yet and
    that its directory does."""
    output_csv = Path(output_csv)
    if output_csv.exists():
        raise ValueError(f"output_csv {str(output_csv)!r} already exists; "
                         f"refusing to overwrite it")
    if not output_csv.parent.is_dir():
        raise ValueError(f"the directory of output_csv {str(output_csv)!r} "
                         f"does not exist")
    return output_csv


def _classify(model, paths, size, channels, batch_size, label_offset):
    """The `filename,label` lines of `paths`, classified in batches of
    `batch_size`; every image must have the shape of the first."""
    lines, shape = [], None
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = [_load(p, size, channels) for p in chunk]
        shape = shape or images[0].shape
        for p, image in zip(chunk, images):
            if image.shape != shape:
                raise ValueError(
                    f"{str(p)!r} is {tuple(image.shape)}, {paths[0].name!r} "
                    f"is {tuple(shape)}; pass image_size= to resize them to "
                    f"one size")
        logits = call_model(model, ops.convert_to_tensor(np.stack(images)))
        labels = ops.convert_to_numpy(ops.argmax(logits, axis=-1)) \
            + label_offset
        lines += [f"{p.name},{int(label)}\n"
                  for p, label in zip(chunk, labels)]
    return lines


def predict_directory(
    model: Callable,
    input_dir: str | os.PathLike,
    output_csv: str | os.PathLike,
    *,
    batch_size: int = 100,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    label_offset: int = 0,
) -> int:
    """Classifies every PNG of `input_dir` and writes `filename,label` lines.

    Images are read in filename order, decoded to float32 `(height, width,
    channels)` in [0, 1] (decoded with Pillow; 16-bit PNGs are reduced to
    8 bits), converted RGB -> gray (`keras.ops.image.rgb_to_grayscale`) or
    gray -> RGB when the model takes the other, resized (bilinear,
    antialiased,
    aspect ratio not kept) when their size differs from the target, and
    classified in batches of `(batch, height, width, channels)`.

    Args:
        model: Keras model (called with `training=False`) or callable mapping
            float32 images in [0, 1] to logits `(batch, classes)`.
        input_dir: directory of `*.png` files (suffix matched without regard
            to case; other files and subdirectories are ignored).
        output_csv: file to create; one `filename,label` line per image, no
            header, the NIPS'17 / CAAD defense output format. It must not
            exist; it is written only after every image was classified.
        batch_size: images per model call, >= 1.
        image_size: target `(height, width)` or an int for square images;
            default the model's input size. When neither is known (a fully
            convolutional model), every image must have the same size.
        channels: 1 or 3, the model's input channels; needed only when the
            model has no `input_shape`.
        label_offset: int added to every argmax label, e.g. 1 to write
            the 1001-class (0 = background) indexing of the NIPS'17
            Inception models from a 1000-class model, or -1 for the reverse.

    Returns:
        The number of images written (int).

    Raises:
        ValueError: `output_csv` exists or its directory does not,
            `input_dir` missing or without PNGs, a file that is not a
            decodable PNG or has a channel count other than 1 or 3 (the
            message names the file), images of different sizes without a
            target size, `image_size` or `channels` that the model does not
            take, or bad `batch_size` / `label_offset`.
    """
    output_csv = _check_output(output_csv)
    _check_int("batch_size", batch_size, 1)
    _check_int("label_offset", label_offset)
    size, channels = _model_input(model, image_size, channels)
    paths = _list_pngs(input_dir)
    lines = _classify(model, paths, size, channels, batch_size, label_offset)
    try:  # atomically: a kill never leaves half a submission
        atomic_write.write_text(output_csv, "".join(lines), exclusive=True)
    except FileExistsError:  # created while we were classifying
        raise ValueError(f"output_csv {str(output_csv)!r} already exists; "
                         f"refusing to overwrite it") from None
    return len(lines)


__all__ = ["predict_directory"]
