"""The project's checked loader of a `.keras` model file.

    >>> from checkpoints import load_model_file
    >>> net = load_model_file("runs/cifar10_pgd/model.keras",
    ...                       expected_input_shape=(32, 32, 3))

What `evaluate.py --model/--workdir`, a distillation teacher and
`checkpoints.load` of a `.keras` path go through. Before and after
`keras.saving.load_model` (safe mode, uncompiled) it checks what would
otherwise fail far from its cause or not at all: a missing, empty,
truncated or non-zip file, a model that takes another input shape than the
data, and weights with NaN or Inf (a diverged run, which the project never
evaluates or fine-tunes). Each problem is one `core.errors.UserError` line
naming the file.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
import zlib
from collections.abc import Sequence

import keras
import numpy as np

from core.errors import UserError

SUFFIX = ".keras"
# The member every Keras 3 `.keras` archive holds (the model's config).
CONFIG_MEMBER = "config.json"


def _check_archive(path: pathlib.Path) -> None:
    """Raises UserError unless `path` is a readable `.keras` zip archive."""
    if not path.exists():
        raise UserError(f"no model file at {path} (expected a {SUFFIX} file "
                        "saved by Keras 3, e.g. a workdir's model.keras)")
    if path.is_dir():
        raise UserError(f"model file {path} is a directory; pass the "
                        f"{SUFFIX} file in it (e.g. {path / 'model.keras'})")
    if path.suffix != SUFFIX:
        raise UserError(f"model file {path} has suffix {path.suffix!r}; "
                        f"accepted: {SUFFIX} (a Keras 3 model archive)")
    if path.stat().st_size == 0:
        raise UserError(f"model file {path} is empty (0 bytes)")
    bad = f"model file {path} is not a Keras zip archive (truncated or corrupt"
    if not zipfile.is_zipfile(path):
        raise UserError(bad + ")")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise UserError(f"{bad}: {e})") from None
    if broken is not None:
        raise UserError(f"{bad}: member {broken!r} fails its CRC check)")
    if CONFIG_MEMBER not in names:
        raise UserError(f"model file {path} is a zip archive but not a Keras "
                        f"model (no {CONFIG_MEMBER})")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else (
        type(error).__name__)


def _check_input_shape(path: pathlib.Path, model: keras.Model,
                       expected: Sequence[int]) -> None:
    expected = tuple(expected)
    try:
        shape = model.input_shape
    except (AttributeError, ValueError) as e:
        raise UserError(f"model file {path}: the model has no defined input "
                        f"shape ({_first_line(e)})") from None
    if isinstance(shape, list):
        raise UserError(f"model file {path}: the model has {len(shape)} "
                        "inputs; expected one image input of shape "
                        f"{expected}")
    shape = tuple(shape[1:])
    if len(shape) != len(expected) or any(
            m is not None and d is not None and m != d
            for m, d in zip(shape, expected)):
        raise UserError(f"model file {path}: the model takes input shape "
                        f"{shape} (H, W, C) but the data has shape "
                        f"{expected}; use data of the model's shape (or "
                        "adapt the model with checkpoints.adapt)")


def _check_finite(path: pathlib.Path, model: keras.Model) -> None:
    weights = model.weights
    bad = [w.path for w in weights
           if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
    if bad:
        raise UserError(f"model file {path}: {len(bad)} of {len(weights)} "
                        f"weight tensors are non-finite (NaN or Inf; first: "
                        f"{bad[0]}); a diverged run: retrain, or use an "
                        "earlier checkpoint")


def load_model_file(path: str | os.PathLike, *,
                    expected_input_shape: Sequence[int] | None = None
                    ) -> keras.Model:
    """Loads a `.keras` model file, checked; a saved trainer gives its net.

    Args:
        path: a Keras 3 `.keras` archive (e.g. a workdir's `model.keras`, a
            saved `AdversarialTrainer`, a converted checkpoint).
        expected_input_shape: `(H, W, C)` of the data the model will see;
            compared with `model.input_shape[1:]`, a `None` on either side
            matching any size. Default: not checked.

    Returns:
        The uncompiled `keras.Model` (a saved trainer's `.net`): float32
        `(batch, H, W, C)` images in -> `(batch, num_classes)` logits out
        for the project's models.

    Raises:
        UserError: no file at `path`, a directory, a suffix other than
            `.keras`; an empty, truncated or corrupt file, or not a zip
            archive; a file Keras cannot deserialize (the exception's first
            line); a model whose input shape differs from
            `expected_input_shape` (both shapes named); a model with NaN or
            Inf weights (how many of how many weight tensors). Every
            message names the file.
    """
    import layers  # noqa: F401  (registers the defense layers)
    import models  # noqa: F401  (and the models' own layers)

    path = pathlib.Path(path)
    _check_archive(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001  (any failure is the file's)
        raise UserError(f"model file {path} could not be deserialized: "
                        f"{_first_line(e)}") from e
    model = getattr(model, "net", model)  # a saved trainer: its network
    if not isinstance(model, keras.Model):
        raise UserError(f"model file {path} holds a "
                        f"{type(model).__name__}, not a keras.Model")
    if expected_input_shape is not None:
        _check_input_shape(path, model, expected_input_shape)
    _check_finite(path, model)
    return model
