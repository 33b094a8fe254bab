"""Tensorpack `.npz` checkpoints of Xie et al. 2019 -> Keras ResNet / ResNeXt.

The releases of "Feature Denoising for Improving Adversarial Robustness"
(Xie, Wu, van der Maaten, Yuille & He, CVPR 2019, arXiv 1812.03411;
facebookresearch/ImageNet-Adversarial-Training, CC-BY-NC 4.0): R152.npz,
R152-Denoise.npz (a Gaussian non-local block after each stage) and
X101-DenoiseAll.npz (ResNeXt-101 32x8d, a dot-product block after every
residual block). Each is a flat dict of tensorpack names (`conv0/W`,
`group{g}/block{b}/conv2/bn/mean/EMA`, `group{g}_denoise/...`,
`.../non_local/...`, `linear/{W,b}`, maybe with `:0`) to arrays whose
layouts Keras shares (HWIO kernels, contiguous conv groups, Dense
`[in, out]`; NCHW only concerns activations). Two input conventions are
folded in: `conv0/W` is reversed along its input-channel axis (the reference
takes BGR, the converted model RGB), and the model's own Normalization
(mean 0.5, std 0.5) turns `[0, 1]` pixels into the reference's `[-1, 1]`
(`x / 127.5 - 1` on 0..255). Conversion is strict: every tensor fills
exactly one Keras weight and every weight is filled, or a `ValueError`
lists the differences.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from absl import logging

from models.resnet import RESNET_SPECS, build_resnet

# Keras BatchNormalization weight -> tensorpack BatchNorm variable.
_BN = {
    "gamma": "gamma",
    "beta": "beta",
    "moving_mean": "mean/EMA",
    "moving_variance": "variance/EMA",
}
_STAGE = r"stage(?P<s>\d+)"
_BLOCK = _STAGE + r"_block(?P<b>\d+)"
_SUB = r"(?P<sub>embedding_theta|embedding_phi|conv)"
# (Keras weight path pattern, tensorpack name template); g = s - 2, k = b - 1.
_RULES = [
    (r"stem_conv/kernel", "conv0/W"),
    (r"stem_bn/(?P<bn>\w+)", "conv0/bn/{bn}"),
    (_BLOCK + r"_conv(?P<i>\d)/kernel", "group{g}/block{k}/conv{i}/W"),
    (_BLOCK + r"_bn(?P<i>\d)/(?P<bn>\w+)", "group{g}/block{k}/conv{i}/bn/{bn}"),
    (_BLOCK + r"_shortcut_conv/kernel", "group{g}/block{k}/convshortcut/W"),
    (_BLOCK + r"_shortcut_bn/(?P<bn>\w+)",
     "group{g}/block{k}/convshortcut/bn/{bn}"),
    (_BLOCK + r"_denoise/" + _SUB + "/kernel",
     "group{g}/block{k}/non_local/{sub}/W"),
    (_BLOCK + r"_denoise/bn/(?P<bn>\w+)",
     "group{g}/block{k}/non_local/conv/bn/{bn}"),
    (_STAGE + r"_denoise/" + _SUB + "/kernel", "group{g}_denoise/{sub}/W"),
    (_STAGE + r"_denoise/bn/(?P<bn>\w+)", "group{g}_denoise/conv/bn/{bn}"),
    (r"logits/kernel", "linear/W"),
    (r"logits/bias", "linear/b"),
]
_MAX_LISTED = 10


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a tensorpack `.npz` checkpoint without unpickling anything.

    Args:
        path: the `.npz` file (e.g. `R152-Denoise.npz`).

    Returns:
        `{name: array}` with a trailing `:0` stripped from every name; the
        arrays keep their stored shapes and dtypes (float32 in the releases).

    Raises:
        FileNotFoundError: if `path` is not a file (the message names it).
        ValueError: naming the file, if it is not a readable `.npz` archive
            (garbage, truncated or corrupt), holds an object array (pickles
            are refused: `allow_pickle=False`), or holds a name twice once
            `:0` is stripped (e.g. both `a` and `a:0`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tensorpack checkpoint file at {path!r}")
    key = None
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive")
        with archive:
            raw = {}
            for key in archive.files:
                raw[key] = archive[key]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError,
            ValueError) as err:
        where = "" if key is None else f" (tensor {key!r})"
        pickled = (" (object arrays need pickle, which is refused)"
                   if key is not None and "pickle" in str(err) else "")
        raise ValueError(f"cannot read tensorpack checkpoint {path!r}{where}: "
                         f"{err}{pickled}") from err
    return _strip_suffixes(raw, repr(path))


def _strip_suffixes(tensors: Mapping[str, Any], origin: str) -> dict:
    """`tensors` with `:0` stripped from the names; duplicates raise."""
    out, seen = {}, {}
    for key, value in tensors.items():
        name = key[:-2] if key.endswith(":0") else key
        if name in out:
            raise ValueError(f"{origin} holds tensor {name!r} twice, as "
                             f"{seen[name]!r} and {key!r}")
        out[name], seen[name] = value, key
    return out


def infer_architecture(tensors: Mapping[str, Any]) -> dict:
    """`build_resnet` keyword arguments from tensor names and shapes only.

    Stand-in arrays with the right `.shape` work, and so do scaled-down
    checkpoints (fewer blocks, smaller width).

    Args:
        tensors: `{tensorpack name: array}` (a trailing `:0` is accepted).

    Returns:
        A dict with `name` (the `RESNET_SPECS` entry with these blocks and
        groups, else the closest of its family, ResNet or ResNeXt),
        `blocks` (4 ints, from `group{g}/block{b}`), `width` (`conv0/W` is
        [7, 7, 3, width]), `groups` and `width_per_group` (the 3x3 kernels
        are [3, 3, inner / groups, inner] with inner `int(planes *
        width_per_group / 64) * groups`, Xie et al. 2017, arXiv
        1611.05431), `num_classes` (from `linear/W`) and `denoise`: None,
        or the released combination for the placement found, since the
        softmax switch is not stored (Xie et al. 2019, Sec. 4):
        `group{g}_denoise/*` gives `{"kind": "gaussian", "embed": True,
        "where": "after_stage"}`, `.../non_local/*` gives `{"kind":
        "dot_product", "embed": False, "where": "after_block"}`, with
        `embed` True exactly when `embedding_theta` tensors exist.

    Raises:
        ValueError: naming the tensor, if `conv0/W`, `linear/W` or a
            stage's `block0/conv2/W` is missing or mis-ranked (not a
            tensorpack bottleneck ResNet); if the stages are not
            `group0..group3`; if no `width_per_group` fits the widths; or if
            both denoise placements occur.
    """
    shapes = {name: tuple(np.shape(value)) for name, value in
              _strip_suffixes(tensors, "tensors").items()}
    for name, rank in (("conv0/W", 4), ("linear/W", 2)):
        if len(shapes.get(name, ())) != rank:
            raise ValueError(f"not a tensorpack ResNet checkpoint: tensor "
                             f"{name!r} of rank {rank} is missing (got "
                             f"{shapes.get(name)})")
    width = shapes["conv0/W"][3]
    blocks = _block_counts(shapes)
    groups, width_per_group = _grouping(shapes, width)
    return {
        "name": _spec_name(blocks, groups, width_per_group),
        "blocks": blocks,
        "width": width,
        "groups": groups,
        "width_per_group": width_per_group,
        "num_classes": shapes["linear/W"][1],
        "denoise": _denoise_spec(shapes),
    }


def _block_counts(shapes: Mapping[str, tuple]) -> tuple[int, ...]:
    """Blocks per stage: 1 + the largest `b` of `group{g}/block{b}/`."""
    last: dict[int, int] = {}
    for name in shapes:
        match = re.match(r"group(\d+)/block(\d+)/", name)
        if match:
            g, b = int(match[1]), int(match[2])
            last[g] = max(last.get(g, 0), b)
    if sorted(last) != [0, 1, 2, 3]:
        raise ValueError("not a tensorpack ResNet checkpoint: expected "
                         f"stages group0..group3; found {sorted(last)}")
    return tuple(last[g] + 1 for g in range(4))


def _grouping(shapes: Mapping[str, tuple], width: int) -> tuple[int, int]:
    """`(groups, width_per_group)` from the stages' `block0/conv2/W`."""
    inner = []
    for g in range(4):
        shape = shapes.get(f"group{g}/block0/conv2/W", ())
        if len(shape) != 4 or shape[2] < 1 or shape[3] % shape[2]:
            raise ValueError(
                "not a tensorpack bottleneck ResNet checkpoint: tensor "
                f"'group{g}/block0/conv2/W' [3, 3, inner/groups, inner] is "
                f"missing or malformed (got {shape or None})")
        inner.append(shape[3])
    groups = inner[0] // shapes["group0/block0/conv2/W"][2]
    upper = -(-(inner[0] // groups + 1) * 64 // width)  # ceil
    for wpg in range(1, upper + 1):
        if all(int(width * 2**g * wpg / 64) * groups == inner[g]
               for g in range(4)):
            return groups, wpg
    raise ValueError(f"no width_per_group gives the bottleneck widths {inner} "
                     f"with width {width} and groups {groups}")


def _denoise_spec(shapes: Mapping[str, tuple]) -> dict | None:
    """The `denoise` hook spec matching the denoise tensors, or None."""
    stage = [n for n in shapes if re.match(r"group\d+_denoise/", n)]
    block = [n for n in shapes if re.match(r"group\d+/block\d+/non_local/", n)]
    if stage and block:
        raise ValueError("checkpoint has both group{g}_denoise/* (after each "
                         "stage) and .../non_local/* (after each block) "
                         f"tensors, e.g. {stage[0]!r} and {block[0]!r}")
    if not stage and not block:
        return None
    embed = any("/embedding_theta/" in n for n in stage + block)
    if stage:
        return {"kind": "gaussian", "embed": embed, "where": "after_stage"}
    return {"kind": "dot_product", "embed": embed, "where": "after_block"}


def _spec_name(blocks: tuple, groups: int, width_per_group: int) -> str:
    """The matching `RESNET_SPECS` key, else the closest bottleneck one."""
    specs = {name: spec for name, spec in RESNET_SPECS.items()
             if spec[0] == "bottleneck" and (spec[2] > 1) == (groups > 1)}
    return min(specs, key=lambda n: (
        tuple(specs[n][1]) != blocks,
        abs(sum(specs[n][1]) - sum(blocks)),
        (specs[n][2], specs[n][3]) != (groups, width_per_group)))


def build_model(arch: Mapping[str, Any],
                input_shape: Sequence[int] = (224, 224, 3)) -> keras.Model:
    """The Keras model for `arch` (from `infer_architecture`).

    Args:
        arch: `build_resnet` keyword arguments (`name`, `blocks`, ...).
        input_shape: `(height, width, 3)`; 224x224 in Xie et al. 2019.

    Returns:
        A randomly initialised `keras.Model` from float32 RGB `(batch,
        height, width, 3)` in [0, 1] to float32 logits `(batch,
        num_classes)`, whose Normalization (mean 0.5, std 0.5) gives the
        reference's [-1, 1] input.

    Raises:
        ValueError: as `models.resnet.build_resnet`.
    """
    return build_resnet(**arch, input_shape=input_shape, mean=0.5, std=0.5)


def _tensorpack_name(path: str) -> str | None:
    """The tensorpack name for a Keras weight path, or None if unknown."""
    for pattern, template in _RULES:
        match = re.fullmatch(pattern, path)
        if match is None:
            continue
        parts = match.groupdict()
        if "bn" in parts:
            if parts["bn"] not in _BN:
                return None
            parts["bn"] = _BN[parts["bn"]]
        if "s" in parts:
            parts["g"] = int(parts["s"]) - 2
        if "b" in parts:
            parts["k"] = int(parts["b"]) - 1
        return template.format(**parts)
    return None


def _model_weights(model: keras.Model) -> list:
    """The model's float weights (RNG seed states are not checkpointed)."""
    return [v for v in model.weights
            if np.issubdtype(np.dtype(v.dtype), np.floating)]


def name_map(model: keras.Model) -> dict[str, str]:
    """`{tensorpack name: Keras weight path}` for every weight of `model`
    that has a tensorpack counterpart (e.g. `"conv0/bn/mean/EMA":
    "stem_bn/moving_mean"`, `"group3_denoise/conv/W":
    "stage5_denoise/conv/kernel"`). The Normalization layer holds
    constants, not weights, so it does not appear."""
    out = {}
    for v in _model_weights(model):
        name = _tensorpack_name(v.path)
        if name is not None:
            out[name] = v.path
    return out


def _listing(what: str, items: list) -> str:
    more = len(items) - _MAX_LISTED
    tail = f" ... and {more} more" if more > 0 else ""
    return f"{len(items)} {what}: {items[:_MAX_LISTED]}{tail}"


def _assignments(tensors: Mapping[str, np.ndarray], model: keras.Model,
                 origin: str, strict: bool) -> list:
    """`[(variable, value)]` for every weight; raises on any mismatch."""
    targets, unmapped = {}, []
    for v in _model_weights(model):
        name = _tensorpack_name(v.path)
        if name is None:
            unmapped.append(v.path)
        else:
            targets[name] = v
    unused = sorted(set(tensors) - set(targets))
    missing = sorted(f"{targets[n].path} (from {n!r})"
                     for n in set(targets) - set(tensors))
    bad = [f"{n}: file shape {list(np.shape(tensors[n]))} vs model shape "
           f"{list(v.shape)}" for n, v in targets.items()
           if n in tensors and tuple(np.shape(tensors[n])) != tuple(v.shape)]
    bad += [f"{n}: dtype {np.asarray(tensors[n]).dtype} is not float"
            for n in targets if n in tensors and not np.issubdtype(
                np.asarray(tensors[n]).dtype, np.floating)]
    problems = [_listing(what, items) for what, items in (
        ("tensors used by no Keras weight", unused if strict else []),
        ("Keras weights with no tensor", missing + unmapped),
        ("mismatched tensors", bad)) if items]
    if problems:
        raise ValueError(f"{origin} does not match Keras model "
                         f"{model.name!r}: " + "; ".join(problems))
    if unused:
        logging.warning("%s: ignoring %s", origin,
                        _listing("unused tensors", unused))
    return [(v, _value(n, tensors[n])) for n, v in targets.items()]


def _value(name: str, array: np.ndarray) -> np.ndarray:
    """The array to assign; `conv0/W` flips BGR input channels to RGB."""
    array = np.asarray(array, dtype=np.float32)
    return array[:, :, ::-1, :] if name == "conv0/W" else array


def _check_normalization(model: keras.Model) -> None:
    """Raises unless the model's "normalize" layer maps [0, 1] to [-1, 1]."""
    try:
        layer = model.get_layer("normalize")
        mean = keras.ops.convert_to_numpy(layer.mean)
        variance = keras.ops.convert_to_numpy(layer.variance)
    except (ValueError, AttributeError, TypeError):
        mean = variance = None
    if mean is None or not (np.allclose(mean, 0.5)
                            and np.allclose(variance, 0.25)):
        raise ValueError(
            f"model {model.name!r} must have a Normalization layer named "
            "'normalize' with mean 0.5 and std 0.5 (tensorpack inputs are in "
            "[-1, 1]); build it with build_model(...)")


def convert(source: str | os.PathLike | Mapping[str, Any],
            model: keras.Model | None = None, *,
            input_shape: Sequence[int] = (224, 224, 3),
            strict: bool = True) -> keras.Model:
    """Loads a tensorpack checkpoint of Xie et al. 2019 into a Keras model.

    Args:
        source: an `.npz` path, or `{tensorpack name: array}` (`:0` ok).
        model: the model to fill, with the Normalization of `build_model`
            (mean 0.5, std 0.5); None builds `build_model(
            infer_architecture(tensors), input_shape)`.
        input_shape: `(height, width, 3)` for a model built here.
        strict: if False, tensors that fill no Keras weight are logged and
            skipped (tensorpack's own loader ignores them) instead of
            raising. Missing and mis-shaped tensors always raise.

    Returns:
        `model` with every weight assigned: it maps float32 RGB images
        `(batch, height, width, 3)` in [0, 1] to float32 logits `(batch,
        num_classes)` equal to the reference's logits for the same image as
        BGR 0..255 (`conv0/W` is flipped BGR -> RGB along its input axis).

    Raises:
        FileNotFoundError, ValueError: as `read_npz` for a bad file.
        ValueError: naming the source, if a tensor fills no Keras weight,
            a Keras weight has no tensor (e.g. a ResNet-Denoise checkpoint
            for a plain ResNet model), shapes differ (listed as `name: file
            shape vs model shape`) or a tensor is not float; nothing is
            assigned then. Also as `infer_architecture` and for a model
            without the [0, 1] -> [-1, 1] normalization.
    """
    if isinstance(source, Mapping):
        origin = "tensors"
        tensors = _strip_suffixes(source, origin)
    else:
        origin = repr(os.fspath(source))
        tensors = read_npz(source)
    if model is None:
        model = build_model(infer_architecture(tensors), input_shape)
    else:
        _check_normalization(model)
    for variable, value in _assignments(tensors, model, origin, strict):
        variable.assign(value)
    return model
