"""The accepted range of every recipe field: the one table that train.py
(recipe and `--recipe.a.b=VALUE` overrides) and evaluate.py (its attack
flags, which override `eval.attack`) check before any work starts.

    check_config(cfg)                 # ValueError on the first bad field
    check_attack({"eps": 5.0, ...}, label=lambda k: f"--{k}")

Each error is one line naming the field, the bad value and what is
accepted. Fields whose choices come from a registry (model, dataset,
training method, attack name) are checked by those registries; this module
imports nothing of the project (recipes are configs only).

Pixel values, `eps` and `step_size` are on the [0, 1] scale, so an L-inf
`eps` or `step_size` above 1 is refused.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Iterable, Mapping

NORMS = ("inf", "2")
LOSSES = ("ce", "cw")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "piecewise", "cyclic")
WARMUP_SCHEDULES = ("cosine", "piecewise")
WEIGHT_DECAY_MODES = ("decoupled", "l2")
ATTACK_TARGETS = ("label", "random")
CHANNELS = (1, 3)
#: Detection defenses (a `DetectionSystem`, models/detection/) and input
#: purifiers (a purifier layer before the classifier) that
#: `defense.name` can build (training/defense_stage.py).
DETECTORS = ("feature_squeezing", "specialists", "magnet", "lid",
             "unrelated_detectors")
PURIFIERS = ("jpeg", "tv_minimization", "image_quilting", "defense_gan",
             "pixel_defend")
DEFENSES = DETECTORS + PURIFIERS
#: Largest seed that every backend's RNG accepts (int32).
MAX_SEED = 2 ** 31 - 1


@dataclasses.dataclass(frozen=True)
class Range:
    """A number in `[lo, hi]` (an open end where `lo_open` / `hi_open`),
    an integer if `integer`, None allowed if `optional`; always finite."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    optional: bool = False
    note: str = ""

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        lo = "" if self.lo is None else ("(" if self.lo_open else "[") + \
            f"{self.lo:g}"
        hi = "" if self.hi is None else f"{self.hi:g}" + (
            ")" if self.hi_open else "]")
        if lo and hi:
            text = f"{kind} in {lo}, {hi}"
        elif lo:
            text = f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        elif hi:
            text = f"{kind} {'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            text = kind
        text += " or None" if self.optional else ""
        return text + (f" ({self.note})" if self.note else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.integer and int(value) != value:
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open
                                    else value < self.lo):
            return False
        return self.hi is None or not (value >= self.hi if self.hi_open
                                       else value > self.hi)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of `values` (None too if `optional`)."""
    values: tuple
    optional: bool = False

    def describe(self) -> str:
        return f"one of {list(self.values)}" + (
            " or None" if self.optional else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        return any(value == v and type(value) is type(v)
                   for v in self.values)


@dataclasses.dataclass(frozen=True)
class Flag:
    """True or False."""

    def describe(self) -> str:
        return "True or False"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Directory:
    """An existing, readable directory (None allowed if `optional`)."""
    optional: bool = True

    def describe(self) -> str:
        return "an existing readable directory" + (
            " or None" if self.optional else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        return (isinstance(value, str) and os.path.isdir(value)
                and os.access(value, os.R_OK | os.X_OK))


Spec = Range | Choice | Flag | Directory

#: Recipe fields (dotted paths) and their ranges.
FIELDS: dict[str, Spec] = {
    "data.global_batch_size": Range(1, integer=True),
    "data.augment": Flag(),
    "data.num_train_examples": Range(1, integer=True, optional=True),
    "data.num_eval_examples": Range(1, integer=True, optional=True),
    "data.image_size": Range(8, 4096, integer=True, optional=True),
    "data.channels": Choice(CHANNELS, optional=True),
    "data.data_dir": Directory(),
    "optimizer.name": Choice(OPTIMIZERS),
    "optimizer.learning_rate": Range(0, lo_open=True),
    "optimizer.momentum": Range(0, 1, hi_open=True),
    "optimizer.nesterov": Flag(),
    "optimizer.weight_decay": Range(0),
    "optimizer.weight_decay_mode": Choice(WEIGHT_DECAY_MODES),
    "schedule.name": Choice(SCHEDULES),
    "schedule.warmup_epochs": Range(0),
    "schedule.warmup_start_lr": Range(0),
    "schedule.peak_fraction": Range(0, 1, lo_open=True, hi_open=True),
    "schedule.decay_factor": Range(0, 1, lo_open=True),
    "train.temperature": Range(0, lo_open=True),
    "train.epochs": Range(1, integer=True),
    "train.steps_per_epoch": Range(1, integer=True, optional=True),
    "train.alpha": Range(0, 1),
    "train.label_smoothing": Range(0, 1, hi_open=True),
    "train.seed": Range(0, MAX_SEED, integer=True),
    "train.backup_every_steps": Range(1, integer=True, optional=True),
    "train.max_loss": Range(0, lo_open=True, note="a larger training loss "
                            "stops the run as diverged"),
    "train.overfit_check.examples": Range(1, integer=True),
    "train.overfit_check.max_drop": Range(0, 1),
    "eval.batch_size": Range(1, integer=True),
    "eval.num_examples": Range(1, integer=True, optional=True),
    "defense.name": Choice(DEFENSES),
    "defense.fpr": Range(0, 1, lo_open=True, hi_open=True,
                         note="false-positive rate on clean images"),
    "defense.num_train_examples": Range(100, integer=True, optional=True),
    "defense.calibration_examples": Range(20, 5000, integer=True),
    "runtime.jit_compile": Flag(),
    "runtime.mixed_precision": Flag(),
}

#: The attack sections of a recipe, checked with `ATTACK_FIELDS`.
ATTACK_SECTIONS = ("attack", "eval.attack", "train.overfit_check.attack")

#: Fields of an attack section (other keys are the attack's own, checked by
#: the attack). L-inf `eps` / `step_size` are re-checked against the pixel
#: scale in `check_attack`.
ATTACK_FIELDS: dict[str, Spec] = {
    "eps": Range(0),
    "step_size": Range(0, lo_open=True),
    "steps": Range(1, integer=True),
    "restarts": Range(1, integer=True),
    "norm": Choice(NORMS),
    "loss": Choice(LOSSES),
    "targeted": Flag(),
    "rand_init": Flag(),
    "target": Choice(ATTACK_TARGETS),
    "prob_start_from_clean": Range(0, 1),
}
_PIXEL_SCALE = Range(0, 1, note="L-inf budgets are on the [0, 1] pixel "
                     "scale: write 8/255 as 0.0313725")


def _lookup(cfg: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of a dotted `path` in a ConfigDict / dict."""
    node = cfg
    for key in path.split("."):
        if node is None or not hasattr(node, "get") or key not in node:
            return False, None
        node = node[key]
    return True, node


def check_value(label: str, value: Any, spec: Spec) -> None:
    """Checks one value against `spec` (e.g. a flag against the range of
    the recipe field it overrides: `FIELDS["eval.batch_size"]`).

    Raises:
        ValueError: `label=value is not accepted; expected ...`.
    """
    if not spec.accepts(value):
        _fail(label, value, spec)


def _fail(label: str, value: Any, spec: Spec) -> None:
    raise ValueError(f"{label}={value!r} is not accepted; expected "
                     f"{spec.describe()}")


def check_attack(section: Mapping[str, Any],
                 label: Callable[[str], str] = str) -> None:
    """Checks the shared fields of one attack section (`ATTACK_FIELDS`).

    Args:
        section: e.g. `{"name": "pgd", "eps": 0.1, "norm": "inf", ...}`.
        label: how a key is named in the message (a recipe path or a flag).

    Raises:
        ValueError: one line naming the first bad field, its value and the
            accepted range.
    """
    for key, spec in ATTACK_FIELDS.items():
        if key in section and not spec.accepts(section[key]):
            _fail(label(key), section[key], spec)
    if section.get("norm", "inf") == "inf":
        for key in ("eps", "step_size"):
            if key in section and not _PIXEL_SCALE.accepts(section[key]):
                _fail(label(key), section[key], _PIXEL_SCALE)


def check_config(cfg: Any, fields: Iterable[str] | None = None) -> None:
    """Checks every field of `cfg` listed in `FIELDS` (or only `fields`),
    every attack section, and the schedule's cross-field rules (a warmup
    only where the schedule has one; increasing LR boundaries).

    Raises:
        ValueError: one line naming the first bad field (as its recipe path),
            its value and the accepted range.
    """
    for path in (FIELDS if fields is None else fields):
        found, value = _lookup(cfg, path)
        if found and not FIELDS[path].accepts(value):
            _fail(f"recipe field {path}", value, FIELDS[path])
    if fields is not None:
        return
    for section in ATTACK_SECTIONS:
        found, value = _lookup(cfg, section)
        if found and value is not None:
            check_attack(value, lambda k, s=section: f"recipe field {s}.{k}")
    _, name = _lookup(cfg, "schedule.name")
    _, warmup = _lookup(cfg, "schedule.warmup_epochs")
    if warmup and name not in WARMUP_SCHEDULES:
        raise ValueError(f"recipe field schedule.warmup_epochs={warmup!r} is "
                         f"not accepted with schedule.name={name!r}; expected "
                         f"0, or a schedule in {list(WARMUP_SCHEDULES)}")
    _, bounds = _lookup(cfg, "schedule.boundaries_epochs")
    bounds = list(bounds or ())
    if any(isinstance(b, bool) or not isinstance(b, (int, float))
           or not 0 < b < math.inf for b in bounds) or bounds != sorted(
               bounds):
        raise ValueError(f"recipe field schedule.boundaries_epochs="
                         f"{tuple(bounds)!r} is not accepted; expected "
                         "increasing epochs > 0")
