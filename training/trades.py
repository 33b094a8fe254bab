"""TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan 2019, "Theoretically
Principled Trade-off between Robustness and Accuracy", arXiv 1901.08573,
Eq. (5) and Algorithm 1, as in the authors' `trades.py` / `trades_loss`).

The objective per minibatch is

    min_f  CE(f(x), y) + beta * max_{x' in B(x, eps)} KL(p(x) || p(x'))

with p = softmax(f). The inner maximisation starts at
`x' = x + 0.001 * N(0, 1)` and takes `steps` L-inf steps
`x' <- Proj_{B(x, eps) ∩ [0, 1]}(x' + step_size * sign(grad_x' KL))` with the
network in inference mode and p(x) held fixed. The outer loss calls the
network in TRAINING mode on x and on x' separately (BatchNorm sees each batch
on its own, as in the reference code) and averages the KL over the batch.
As in the reference code, the outer KL is differentiated through both p(x)
and p(x'). The inner maximisation is the registered attack
`attacks.trades_kl`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

import attacks
from attacks.primitives import validate
from attacks.trades_kl import kl_divergence
from core import backends
from core.keras_internals import track_loss
from training import register_method
from training.adversarial import AdversarialTrainer


@keras.saving.register_keras_serializable(package="robust_recipes")
class TradesLoss(keras.losses.Loss):
    """The TRADES outer loss (Zhang et al. 2019, arXiv 1901.08573, Eq. (5)):
    per example `CE(clean, y) + beta * KL(softmax(clean) || softmax(adv))`,
    averaged over the batch by the default "sum_over_batch_size" reduction
    (the reference code's mean cross-entropy + KL "batchmean").

    Call arguments:
        y_true: int labels `(batch,)` or `(batch, 1)`.
        y_pred: float `(batch, 2 * classes)`: clean logits then adversarial
            logits, concatenated on the last axis (see `TradesTrainer`).

    Args:
        beta: the trade-off weight 1 / lambda, >= 0 (6 in the paper's
            CIFAR-10 / MNIST results; `beta=0` is natural training).
        label_smoothing: in [0, 1), applied to the CE term only (TRADES
            itself uses 0).

    Raises:
        ValueError: beta < 0 or not finite, label_smoothing outside [0, 1),
            or a `y_pred` whose last axis is not a known even size.
    """

    def __init__(self, beta: float = 6.0, label_smoothing: float = 0.0,
                 name: str = "trades_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not (np.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0; got "
                             f"{beta!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1); got "
                             f"{label_smoothing!r}")
        self.beta = float(beta)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        width = y_pred.shape[-1]
        if width is None or width % 2:
            raise ValueError(
                "TradesLoss needs y_pred = [clean logits, adversarial "
                f"logits] of shape (batch, 2 * classes); got {y_pred.shape}")
        clean, adv = ops.split(ops.cast(y_pred, "float32"), 2, axis=-1)
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        classes = width // 2
        target = ops.one_hot(labels, classes) * (1.0 - self.label_smoothing)
        target += self.label_smoothing / classes
        ce = ops.categorical_crossentropy(target, clean, from_logits=True)
        return ce + self.beta * kl_divergence(clean, adv)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta,
                "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="robust_recipes")
class TradesTrainer(AdversarialTrainer):
    """Wraps `net` and trains it with TRADES (Zhang et al. 2019, arXiv
    1901.08573, Algorithm 1); compile it with `TradesLoss(beta)`.

    Each step crafts `x_adv = trades_perturb(net, x, ...)` (inference mode,
    no gradient through it), calls `net` in training mode on `x` and on
    `x_adv` separately, and hands `y_pred = [clean, adv]` (shape `(batch,
    2 * classes)`) to the compiled loss through Keras's own `compute_loss`,
    so regularisation losses, loss scaling under a distribution strategy
    and mixed precision are Keras's. Training-step metrics use the clean
    logits; `test_step` is clean too (its loss is the CE: the KL of x with
    itself is 0).

    Args:
        net: a `keras.Model` mapping float32 `(batch, height, width,
            channels)` images in `[0, 1]` to logits `(batch, classes)`.
        eps: L-inf radius of the inner maximisation on the [0, 1] scale
            (0.031 for CIFAR-10, 0.3 for MNIST in the paper), >= 0.
        step_size: its step (0.007 / 0.01 in the paper), > 0.
        steps: its number of steps (10 / 40 in the paper), >= 1.
        seed: None draws the 0.001 * N(0, 1) start from the trainer's own
            `seed_generator` (seeded by `rng_seed`, saved with a backup);
            an int makes it the stateless pair (seed, optimizer step),
            reproducible.
        **kwargs: passed to `keras.Model`.

    Call arguments:
        x: float32 `(batch, height, width, channels)` in `[0, 1]`.
        training: Python bool, forwarded to `net`.

    Raises:
        ValueError: eps < 0, step_size <= 0, steps < 1 (naming the value);
            a step with a compiled loss that is not a `TradesLoss`.
    """

    def __init__(self, net: keras.Model, eps: float = 0.031,
                 step_size: float = 0.007, steps: int = 10,
                 seed: int | None = None, **kwargs):
        validate(eps=eps, norm="inf", steps=steps, step_size=step_size)
        super().__init__(net, attack=None, alpha=0.0, **kwargs)
        self.eps, self.step_size = float(eps), float(step_size)
        self.steps = int(steps)
        self.seed = None if seed is None else int(seed)

    def _adversarial(self, x):
        seed = self.seed_generator
        if self.seed is not None:
            it = self.optimizer.iterations
            step = ops.cast(it, keras.backend.standardize_dtype(it.dtype))
            # core.backends reduces a seed pair mod 2**31 - 1: reducing the
            # int first changes nothing and keeps it in int32 under JAX.
            seed = ops.stack([ops.convert_to_tensor(
                self.seed % (2 ** 31 - 1), ops.dtype(step)), step])
        return ops.stop_gradient(attacks.trades_kl(
            self.net, x, None, eps=self.eps, step_size=self.step_size,
            steps=self.steps, seed=seed))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """Keras's `compute_loss` with the compiled `TradesLoss`; clean
        logits `(batch, classes)` alone (validation, Keras's symbolic build)
        count as `[clean, clean]`, whose KL term is 0."""
        if not isinstance(self.loss, TradesLoss):
            raise ValueError("TradesTrainer must be compiled with "
                             f"trades.TradesLoss; got {self.loss!r}")
        if y_pred is not None and y_pred.shape[-1] == self.net.output_shape[
                -1]:
            y_pred = ops.concatenate([y_pred, y_pred], axis=-1)
        return super().compute_loss(x, y, y_pred, sample_weight,
                                    training=training)

    def train_step(self, *args):
        # The backend's calling convention (TF: `(data)` -> logs, JAX:
        # `(state, data)` -> `(logs, state)`) around the stateful `step`.
        return self.backend_logs(backends.train_step(self, args, self.step))

    def step(self, data):
        """One TRADES step on `data` in stateful style (under JAX,
        core.backends maps the trainer's state onto its variables);
        returns the logs."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = ops.cast(x, "float32")
        x_adv = self._adversarial(x)

        def loss_fn():
            clean = self(x, training=True)
            adv = self(x_adv, training=True)  # a separate BatchNorm batch
            loss = self.compute_loss(
                x=x, y=y, y_pred=ops.concatenate([clean, adv], axis=-1),
                sample_weight=sample_weight, training=True)
            track_loss(self, loss, ops.shape(x)[0])
            return self.optimizer.scale_loss(loss), clean

        weights = self.trainable_weights
        _, clean, grads, _ = backends.gradients(loss_fn, weights)
        self.optimizer.apply_gradients(zip(grads, weights))
        return self.compute_metrics(x, y, clean, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        for key in ("attack", "alpha"):
            config.pop(key, None)
        return {**config, "eps": self.eps, "step_size": self.step_size,
                "steps": self.steps, "seed": self.seed}


@register_method("trades")
def from_recipe(cfg, net: keras.Model,
                teacher: keras.Model | None = None):
    """(`TradesTrainer` around `net`, `TradesLoss`, metrics) for a recipe
    config with `train.method == "trades"`: the inner maximisation's eps,
    step_size and steps from `cfg.attack` (an L-inf `common.pgd(...)`
    section; its rand_init / restarts are not used: TRADES starts at
    x + 0.001 * N(0, 1)), beta from `cfg.train.beta`, label smoothing of
    the CE term from `cfg.train.label_smoothing`, seed from
    `cfg.train.seed`.

    Raises:
        ValueError: no attack section, `cfg.attack.norm != "inf"`, or a bad
            eps / step_size / steps / beta.
    """
    del teacher  # single-stage method (training.build_trainer's signature)
    if cfg.attack is None or cfg.attack.get("norm", "inf") != "inf":
        norm = None if cfg.attack is None else cfg.attack.norm
        raise ValueError("TRADES needs an L-inf attack section (attack.norm "
                         f"'inf'); got norm {norm!r}")
    a = cfg.attack
    model = TradesTrainer(net, eps=a.eps, step_size=a.step_size,
                          steps=a.steps, seed=cfg.train.seed)
    return (model, TradesLoss(cfg.train.beta, cfg.train.label_smoothing),
            ["accuracy"])
