"""Optimizer and learning-rate schedule from a recipe's `optimizer` and
`schedule` sections (Keras optimizers and schedules, plus the linear warmup
before a piecewise-constant schedule and the coupled L2 penalty of Xie et
al. 2019's training code, which Keras lacks).
"""

from __future__ import annotations

import keras
import ml_collections

from core.keras_internals import uses_weight_decay
from recipes.ranges import OPTIMIZERS, SCHEDULES, WARMUP_SCHEDULES

# "decoupled": Keras's `weight_decay`, w -= lr * wd * w outside the momentum
# (Loshchilov & Hutter 2019, arXiv 1711.05101). "l2": wd * w is added to the
# gradient, i.e. the penalty wd / 2 * ||w||^2 in the loss, which momentum
# then accumulates: TF1's `l2_regularizer(wd)` (= keras `regularizers.l2(wd
# / 2)`), as in Goyal et al. 2017 and Xie et al. 2019. Momentum 0.9
# accumulates the "l2" term, so at a steady state it shrinks weights ~10x
# more per step than "decoupled" with the same wd does.
WEIGHT_DECAY_MODES = ("decoupled", "l2")
# Weight decay applies to kernels only (Xie et al. 2019 / Goyal et al. 2017,
# arXiv 1706.02677): never to BatchNorm gamma/beta or biases.
_NO_DECAY = ["gamma", "beta", "bias"]


Schedule = keras.optimizers.schedules.LearningRateSchedule


def build_schedule(opt: ml_collections.ConfigDict,
                   sched: ml_collections.ConfigDict, steps_per_epoch: int,
                   epochs: int) -> float | Schedule:
    """LR schedule in optimizer steps.

    "constant": `opt.learning_rate` throughout. "cosine": linear warmup over
    `sched.warmup_epochs` then cosine decay to 0 over the rest (Loshchilov &
    Hutter 2017, arXiv 1608.03983). "piecewise": multiply by
    `sched.decay_factor` at each of `sched.boundaries_epochs`, after an
    optional linear warmup over `sched.warmup_epochs` (Goyal et al. 2017,
    arXiv 1706.02677, Sec. 2.2; see `WarmupPiecewise`). "cyclic": one
    triangle, linear from 0 up to `opt.learning_rate` at
    `sched.peak_fraction` of training and back down to 0 (Smith & Topin
    2017, arXiv 1708.07120; the schedule of Wong et al. 2020, arXiv
    2001.03994, Sec. 5.1, with the peak at 2/5).

    A warmup starts at `sched.warmup_start_lr` (optional key, default 0.0)
    and rises linearly to `opt.learning_rate`. A start above the target is
    clamped to it (a flat "warmup"), as Xie et al. 2019's code warms up
    from 0.1 only when the batch-scaled LR exceeds 0.1.

    Raises:
        ValueError: unknown schedule name (lists `SCHEDULES`), a warmup
            with the "constant"/"cyclic" schedules, or a negative
            `warmup_start_lr`.
    """
    lr = float(opt.learning_rate)
    total = max(1, steps_per_epoch * epochs)
    warmup = int(sched.warmup_epochs * steps_per_epoch)
    start = float(sched.get("warmup_start_lr", 0.0))
    if sched.name not in SCHEDULES:
        raise ValueError(f"schedule.name must be one of {SCHEDULES}; got "
                         f"{sched.name!r}")
    if warmup and sched.name not in WARMUP_SCHEDULES:
        raise ValueError("schedule.warmup_epochs is supported with the "
                         f"{WARMUP_SCHEDULES} schedules only; got "
                         f"{sched.name!r}")
    if start < 0:
        raise ValueError("schedule.warmup_start_lr must be >= 0; got "
                         f"{start!r}")
    start = min(start, lr)
    if sched.name == "constant":
        return lr
    if sched.name == "cyclic":
        return CyclicLR(lr, total, float(sched.peak_fraction))
    if sched.name == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=start if warmup else lr,
            decay_steps=max(1, total - warmup), warmup_steps=warmup,
            warmup_target=lr if warmup else None)
    bounds = [int(e * steps_per_epoch) for e in sched.boundaries_epochs]
    values = [lr * sched.decay_factor ** i for i in range(len(bounds) + 1)]
    if not warmup:
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds,
                                                                 values)
    return WarmupPiecewise(bounds, values, warmup, start)


def build_optimizer(opt: ml_collections.ConfigDict,
                    sched: ml_collections.ConfigDict, steps_per_epoch: int,
                    epochs: int) -> keras.optimizers.Optimizer:
    """A Keras optimizer: "adam" or "sgd" (momentum, optional Nesterov).

    `opt.weight_decay` applies to kernels only (never to BatchNorm gamma /
    beta or biases), in the way named by the optional key
    `opt.weight_decay_mode` (default "decoupled"; see `WEIGHT_DECAY_MODES`).

    Raises:
        ValueError: unknown optimizer name (lists `OPTIMIZERS`) or weight
            decay mode (lists `WEIGHT_DECAY_MODES`).
    """
    lr = build_schedule(opt, sched, steps_per_epoch, epochs)
    wd = float(opt.weight_decay) or None
    mode = opt.get("weight_decay_mode", "decoupled")
    if mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"optimizer.weight_decay_mode must be one of "
                         f"{WEIGHT_DECAY_MODES}; got {mode!r}")
    classes = {"decoupled": {"adam": keras.optimizers.Adam,
                             "sgd": keras.optimizers.SGD},
               "l2": {"adam": L2Adam, "sgd": L2SGD}}[mode]
    kwargs = ({"weight_decay": wd} if mode == "decoupled"
              else {"l2": wd or 0.0})
    if opt.name == "adam":
        optimizer = classes["adam"](lr, **kwargs)
    elif opt.name == "sgd":
        optimizer = classes["sgd"](lr, momentum=opt.momentum,
                                   nesterov=opt.nesterov, **kwargs)
    else:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}; got "
                         f"{opt.name!r}")
    if wd:
        optimizer.exclude_from_weight_decay(var_names=_NO_DECAY)
    return optimizer


class _CoupledL2:
    """Adds `l2 * w` to the gradient of every variable that weight decay
    applies to (`exclude_from_weight_decay` rules), after the gradients are
    summed across replicas and before the optimizer's own update (momentum
    included): the gradient of `l2 / 2 * ||w||^2` in the loss, counted once
    per step whatever the number of replicas."""

    def __init__(self, *args, l2: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not l2 >= 0:
            raise ValueError(f"l2 must be >= 0; got {l2!r}")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2 and uses_weight_decay(self, variable):
            gradient = keras.ops.add(
                keras.ops.cast(gradient, variable.dtype),
                keras.ops.multiply(keras.ops.cast(self.l2, variable.dtype),
                                   variable))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="robust_recipes")
class L2SGD(_CoupledL2, keras.optimizers.SGD):
    """`keras.optimizers.SGD` plus a coupled L2 penalty `l2` (float >= 0;
    see `_CoupledL2`): TF1 `MomentumOptimizer` with `l2_regularizer(l2)` on
    the kernels, the optimizer of Xie et al. 2019 (arXiv 1812.03411).

    Raises:
        ValueError: `l2 < 0`.
    """


@keras.saving.register_keras_serializable(package="robust_recipes")
class L2Adam(_CoupledL2, keras.optimizers.Adam):
    """`keras.optimizers.Adam` plus a coupled L2 penalty `l2` (float >= 0;
    see `_CoupledL2`): Adam's "L2 regularization" rather than AdamW's
    decoupled decay (Loshchilov & Hutter 2019, arXiv 1711.05101).

    Raises:
        ValueError: `l2 < 0`.
    """


@keras.saving.register_keras_serializable(package="robust_recipes")
class WarmupPiecewise(Schedule):
    """Linear warmup, then piecewise constant (float32 scalar per step).

    For `step < warmup_steps`: `warmup_start + (values[0] - warmup_start) *
    step / warmup_steps`; afterwards Keras's `PiecewiseConstantDecay(
    boundaries, values)` (`values[i]` while `boundaries[i - 1] < step <=
    boundaries[i]`). Goyal et al. 2017 (arXiv 1706.02677, Sec. 2.2) and Xie
    et al. 2019 (arXiv 1812.03411): 0.1 -> 1.6 over 5 epochs, then x0.1
    after epochs 35, 70 and 95.

    Raises:
        ValueError: `len(values) != len(boundaries) + 1`, `warmup_steps < 1`
            or `warmup_start < 0`.
    """

    def __init__(self, boundaries, values, warmup_steps: int,
                 warmup_start: float = 0.0):
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"values needs len(boundaries) + 1 = {len(boundaries) + 1} "
                f"entries; got {len(values)}")
        if int(warmup_steps) < 1:
            raise ValueError(f"warmup_steps must be >= 1; got "
                             f"{warmup_steps!r}")
        if not warmup_start >= 0:
            raise ValueError(f"warmup_start must be >= 0; got "
                             f"{warmup_start!r}")
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]
        self.warmup_steps = int(warmup_steps)
        self.warmup_start = float(warmup_start)
        self._piecewise = keras.optimizers.schedules.PiecewiseConstantDecay(
            self.boundaries, self.values) if self.boundaries else None

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        peak = self.values[0]
        warm = self.warmup_start + (peak - self.warmup_start) * (
            step / self.warmup_steps)
        after = (self._piecewise(step) if self._piecewise is not None
                 else keras.ops.convert_to_tensor(peak, "float32"))
        return keras.ops.where(step < self.warmup_steps, warm,
                               keras.ops.cast(after, "float32"))

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values,
                "warmup_steps": self.warmup_steps,
                "warmup_start": self.warmup_start}


@keras.saving.register_keras_serializable(package="robust_recipes")
class CyclicLR(Schedule):
    """One triangular cycle: 0 -> `max_lr` (at `peak_fraction * total_steps`)
    -> 0 at `total_steps`, linear in the optimizer step (float32 scalar).

    Raises:
        ValueError: `max_lr <= 0`, `total_steps < 1` or `peak_fraction`
            outside (0, 1).
    """

    def __init__(self, max_lr: float, total_steps: int,
                 peak_fraction: float = 0.4):
        if not max_lr > 0:
            raise ValueError(f"max_lr must be > 0; got {max_lr!r}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1; got {total_steps!r}")
        if not 0.0 < peak_fraction < 1.0:
            raise ValueError("schedule.peak_fraction must be in (0, 1); got "
                             f"{peak_fraction!r}")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.peak_fraction = float(peak_fraction)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        peak = self.peak_fraction * self.total_steps
        up = step / peak
        down = (self.total_steps - step) / (self.total_steps - peak)
        return self.max_lr * keras.ops.clip(keras.ops.minimum(up, down),
                                            0.0, 1.0)

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps,
                "peak_fraction": self.peak_fraction}
