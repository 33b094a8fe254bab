"""Thermometer-encoded networks adversarially trained with LS-PGA.

Buckman, Roy, Raffel, Goodfellow 2018, "Thermometer Encoding: One Hot Way To
Resist Adversarial Examples", ICLR (OpenReview S18Su--CW; no arXiv id),
adversarial training on LS-PGA (Sec. 4, Alg. 3; the attack is the
registered `attacks.ls_pga`, whose module describes the algorithm).

Training mixes LS-PGA examples with clean ones: `alpha` weighs the clean
loss as in Goodfellow et al. 2015 (arXiv 1412.6572, Eq. 6), `alpha = 0.5`
being the 50/50 batch (`alpha = 0`: LS-PGA examples only, as the reference
training code does: Athalye et al.'s re-implementation in
anishathalye/obfuscated-gradients, thermometer/train.py). LS-PGA returns
the hard code as a pixel image whose encoding is exactly that code, so
training goes through the unchanged network.
"""

from __future__ import annotations

from typing import Any, Mapping

import keras
from keras import ops

import attacks
from attacks.ls_pga import LS_PGA_ARGS, check_args, split_thermometer
from core import backends
from training import register_method
from training.adversarial import AdversarialTrainer
from training.losses import classification_loss


@keras.saving.register_keras_serializable(package="robust_recipes")
class ThermometerTrainer(AdversarialTrainer):
    """Trains a thermometer-encoded `net` on LS-PGA examples mixed with
    clean ones (Buckman et al. 2018, adversarial training on LS-PGA).

    Each step crafts `x_adv = ls_pga(net, x, y, **attack)` (stopped
    gradient) and takes the stock Keras step on `alpha * CE(x) + (1 - alpha)
    * CE(x_adv)` (`[x; x_adv]` with weights `2 alpha` and `2 (1 - alpha)`);
    `alpha = 0` trains on `x_adv` only. Cost per step: `steps` forward and
    backward passes of the body on the batch, then one training pass on
    twice the batch (once when `alpha = 0`). Validation is clean.

    Args:
        net: see `split_thermometer`; maps float32 `(batch, height, width,
            channels)` in [0, 1] to logits `(batch, classes)`.
        attack: `{"name": "ls_pga", "eps": ..., "steps": ..., ...}` with the
            keyword arguments of `ls_pga` (`LS_PGA_ARGS`).
        alpha: clean-loss weight in [0, 1).
        **kwargs: passed to `keras.Model` (and `rng_seed`, the seed of an
            unseeded attack's draws under JAX, to `AdversarialTrainer`).

    Raises:
        ValueError: attack name not "ls_pga", unknown attack keys, bad
            attack values, `alpha` outside [0, 1), or a `net` without a
            leading `ThermometerEncoding`.
    """

    def __init__(self, net: keras.Model, attack: Mapping[str, Any],
                 alpha: float = 0.5, **kwargs):
        attack = dict(attack)
        if attack.get("name") != "ls_pga":
            raise ValueError(f"attack name must be 'ls_pga'; got "
                             f"{attack.get('name')!r}")
        params = {k: v for k, v in attack.items() if k != "name"}
        unknown = sorted(set(params) - set(LS_PGA_ARGS))
        if unknown or not {"eps", "steps"} <= set(params):
            raise ValueError(f"ls_pga attack keys must include eps and "
                             f"steps, from {LS_PGA_ARGS}; got {sorted(params)}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1); got {alpha!r}")
        check_args(params["eps"], params["steps"],
                    params.get("logit_step", 1.0), params.get("anneal", 1.2),
                    params.get("temperature", 1.0))
        split_thermometer(net)
        super().__init__(net, attack=None, alpha=alpha, **kwargs)
        self.attack = attack
        self._ls_pga = attacks.from_config(attack)
        # An unseeded attack gets a seed pair per step from the trainer's
        # generator (`attack_seed`).
        self._seed_attack = (attack.get("seed") is None
                             and self.seed_generator is not None)

    def adversarial_batch(self, data):
        """The `(x, y, sample_weight)` the step trains on: `x` then its
        LS-PGA image along the batch axis (only the latter if alpha = 0)."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_adv = ops.stop_gradient(self._ls_pga(self.net, x, y,
                                               **self.attack_seed()))
        return self.mix_batch(x, x_adv, y, sample_weight)

    def train_step(self, *args):
        # The parent step (attack=None) leaves the batch as given and makes
        # the logs per-worker (core.backends: TF `(data)`, JAX `(state,
        # data)`).
        return backends.prepared_train_step(self, args, self.adversarial_batch,
                                            super().train_step)


@register_method("thermometer")
def from_recipe(cfg, net: keras.Model,
                teacher: keras.Model | None = None):
    """(`ThermometerTrainer`, loss, metrics) for `train.method ==
    "thermometer"`: `cfg.attack` is the ls_pga section, `cfg.train.alpha`
    the clean weight, `cfg.train.label_smoothing` the loss's."""
    del teacher  # single-stage method (training.build_trainer's signature)
    return (ThermometerTrainer(net, cfg.attack.to_dict(), cfg.train.alpha),
            classification_loss(cfg.train.label_smoothing),
            ["accuracy"])
