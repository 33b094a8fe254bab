"""One entry point for every kind of initial weights: `load(NAME_OR_PATH)`.

Accepted forms (what `train.py --init_checkpoint` and `evaluate.py
--checkpoint` take):

- a registered name, e.g. "denoise_resnet152.xie2019_in1k" (see
  `checkpoints.list_checkpoints()`): downloaded once, hash-checked,
  converted with its registered converter;
- a path to a tensorpack `.npz` (Xie et al. 2019 format): architecture
  inferred from its tensor names, converted;
- a path to one of the project's own `.keras` models (e.g. a workdir's
  `model.keras`);
- "keras_applications.NAME[:WEIGHTS_FILE]": a Keras Applications ImageNet
  classifier (see `checkpoints.keras_applications`).

Every result obeys the project's contract: float32 RGB `(batch, H, W, C)`
in [0, 1] in, float32 logits out.
"""

from __future__ import annotations

import os
import pathlib

import keras

from checkpoints import convert_tensorpack, keras_applications
from checkpoints.download import fetch
from checkpoints.model_file import load_model_file
from checkpoints.published import CHECKPOINTS
from core.errors import UserError


def describe_forms() -> str:
    """The accepted forms, for error messages."""
    return (f"a registered checkpoint {CHECKPOINTS.names()}, a .npz "
            "(tensorpack) or .keras path, or "
            f"'{keras_applications.PREFIX}NAME[:WEIGHTS_FILE]' with NAME in "
            f"{sorted(keras_applications.APPLICATIONS)}")


def load(name_or_path: str, *,
         input_shape: tuple[int, int, int] | None = None,
         cache_dir: str | os.PathLike | None = None,
         trust_sha256: str | None = None) -> keras.Model:
    """Loads a checkpoint as a Keras model under the project's contract.

    Args:
        name_or_path: one of the forms in the module docstring.
        input_shape: `(height, width, channels)` to build a converted or
            Keras Applications model at; default the registry's input size
            (224 x 224 x 3 for the ImageNet models). Ignored for `.keras`
            files (see `checkpoints.fine_tune.adapt` to change it).
        cache_dir: download cache root (default `$KERAS_HOME` or
            `~/.keras`); only registered names download.
        trust_sha256: for a registered name whose publisher gives no
            SHA-256: the 64 hex digits of a file the user placed in the
            cache and checked (`--trust_sha256`); see
            `checkpoints.download.fetch`. Only for registered names.

    Returns:
        A `keras.Model`: float32 `(batch, H, W, C)` in [0, 1] -> float32
        logits `(batch, num_classes)`.

    Raises:
        UserError: (a `ValueError`) a non-RGB `input_shape` for an RGB
            checkpoint (all but `.keras` files); an unknown name or a
            missing path (the message lists the accepted forms);
            `trust_sha256` with anything but a registered name; an
            unverifiable, hash-mismatched or undownloadable checkpoint
            (`checkpoints.download.fetch`); a bad `.keras` file
            (`checkpoints.model_file.load_model_file`).
        ValueError: a corrupt or wrong-architecture `.npz` (from the
            converter).
    """
    path = pathlib.Path(name_or_path)
    if name_or_path in CHECKPOINTS:
        kind = "registered"
    elif name_or_path.startswith(keras_applications.PREFIX):
        kind = "keras_applications"
    elif path.suffix in (".npz", ".keras") and path.exists():
        kind = path.suffix
    else:
        what = ("no such file" if path.suffix in (".npz", ".keras")
                else "not a registered checkpoint or a .npz/.keras path")
        raise UserError(f"checkpoint {name_or_path!r}: {what}; accepted: "
                        f"{describe_forms()}")
    if trust_sha256 is not None and kind != "registered":
        raise UserError(f"--trust_sha256 applies to a registered checkpoint "
                        f"{CHECKPOINTS.names()}; got it with "
                        f"{name_or_path!r}")
    if kind == ".keras":
        return load_model_file(path)  # checked; a saved trainer: its net
    if input_shape is not None and tuple(input_shape)[-1:] != (3,):
        raise UserError(
            f"checkpoint {name_or_path!r} takes RGB images (3 channels); got "
            f"input_shape={tuple(input_shape)}; for grayscale data set the "
            "recipe's data.channels=3")
    if kind == "keras_applications":
        return keras_applications.load(
            name_or_path, input_shape=tuple(input_shape or (224, 224, 3)))
    if kind == ".npz":
        return convert_tensorpack.convert(
            path, input_shape=tuple(input_shape or (224, 224, 3)))
    spec = CHECKPOINTS.get(name_or_path)
    local = fetch(spec, cache_dir, trust_sha256=trust_sha256)
    shape = tuple(input_shape or (spec.input_size, spec.input_size, 3))
    if spec.converter == "keras":
        return load_model_file(local)
    arch = {**dict(spec.model_kwargs), "num_classes": spec.num_classes}
    model = convert_tensorpack.build_model(arch, input_shape=shape)
    return convert_tensorpack.convert(local, model)
