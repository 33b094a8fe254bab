"""Optimizer and learning-rate schedule from a recipe's `optimizer` and
`schedule` sections (Keras optimizers and schedules; nothing hand-rolled).
"""

from __future__ import annotations

import keras
import ml_collections

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "piecewise", "cyclic")
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
    `sched.decay_factor` at each of `sched.boundaries_epochs`. "cyclic":
    one triangle, linear from 0 up to `opt.learning_rate` at
    `sched.peak_fraction` of training and back down to 0 (Smith & Topin
    2017, arXiv 1708.07120; the schedule of Wong et al. 2020, arXiv
    2001.03994, Sec. 5.1, with the peak at 2/5).

    Raises:
        ValueError: unknown schedule name (lists `SCHEDULES`), or a warmup
            with the "constant"/"piecewise" schedules.
    """
    lr = float(opt.learning_rate)
    total = max(1, steps_per_epoch * epochs)
    warmup = int(sched.warmup_epochs * steps_per_epoch)
    if sched.name not in SCHEDULES:
        raise ValueError(f"schedule.name must be one of {SCHEDULES}; got "
                         f"{sched.name!r}")
    if warmup and sched.name != "cosine":
        raise ValueError("schedule.warmup_epochs is supported with the "
                         f"'cosine' schedule only; got {sched.name!r}")
    if sched.name == "constant":
        return lr
    if sched.name == "cyclic":
        return CyclicLR(lr, total, float(sched.peak_fraction))
    if sched.name == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else lr,
            decay_steps=max(1, total - warmup), warmup_steps=warmup,
            warmup_target=lr if warmup else None)
    bounds = [int(e * steps_per_epoch) for e in sched.boundaries_epochs]
    values = [lr * sched.decay_factor ** i for i in range(len(bounds) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)


def build_optimizer(opt: ml_collections.ConfigDict,
                    sched: ml_collections.ConfigDict, steps_per_epoch: int,
                    epochs: int) -> keras.optimizers.Optimizer:
    """A Keras optimizer: "adam" or "sgd" (momentum, optional Nesterov).

    Raises:
        ValueError: unknown optimizer name (lists `OPTIMIZERS`).
    """
    lr = build_schedule(opt, sched, steps_per_epoch, epochs)
    wd = float(opt.weight_decay) or None
    if opt.name == "adam":
        optimizer = keras.optimizers.Adam(lr, weight_decay=wd)
    elif opt.name == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=opt.momentum,
                                         nesterov=opt.nesterov,
                                         weight_decay=wd)
    else:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}; got "
                         f"{opt.name!r}")
    if wd:
        optimizer.exclude_from_weight_decay(var_names=_NO_DECAY)
    return optimizer


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
