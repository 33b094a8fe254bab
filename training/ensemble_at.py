"""Ensemble Adversarial Training (Tramer, Kurakin, Papernot, Goodfellow,
Boneh, McDaniel 2018, "Ensemble Adversarial Training: Attacks and Defenses",
ICLR, arXiv 1705.07204).

Single-step adversarial training converges to a degenerate minimum whose
gradients mask the loss (Sec. 3.3). Sec. 3.4 decouples the adversarial
examples from the trained model: they are also crafted on n static,
pre-trained models. In Sec. 4.2 (ImageNet) each batch takes its adversarial
examples from one source, the trained model or one of the pre-trained ones,
drawn at random per batch; half of each minibatch is replaced by
single-step (Step-LL) examples, as in Kurakin, Goodfellow, Bengio 2017
("Adversarial Machine Learning at Scale", arXiv 1611.01236, Alg. 1), whose
loss over a batch of m examples with k adversarial ones is

    L = (sum_clean CE + lambda * sum_adv CE) / ((m - k) + lambda * k).

The authors' MNIST code (github.com/ftramer/ensemble-adv-training,
`train_adv.py` / `tf_utils.py`) draws the source uniformly among the n + 1
models per batch, crafts FGSM on the source's own predicted labels (against
label leaking) and averages the clean and adversarial losses.

Here `selection="random"` draws the source per step from
`(seed, optimizer.iterations)` (stateless, so replicas agree and a resumed
run repeats the sequence); `"round_robin"` cycles current, static 1, ...
static n. The attack is any registered one (`attacks.from_config`), e.g.
fgsm, rfgsm (R+FGSM, the paper's Sec. 4.1) or illc with steps=1 and
step_size=eps (Step-LL).
Cost: `keras.ops.switch` runs only the chosen source, so a step costs one
attack on the k adversarial examples (one forward and backward pass of that
model for a single-step attack, plus a forward pass with predicted labels)
and one training pass on the m examples: less than standard single-step
adversarial training on the whole batch. All n + 1 branches are traced, so
graph building grows with n. Static models are frozen, called with
`training=False`, and saved only inside the trainer's own checkpoints, never
in `net`.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Mapping, Sequence

import keras
import numpy as np
from keras import ops

import attacks
from attacks import primitives
from core import backends
from training import register_method
from training.adversarial import AdversarialTrainer
from training.losses import classification_loss

SELECTIONS = ("random", "round_robin")
LABELS = ("true", "predicted")


def check_static_models(net: keras.Model,
                        static_models: Sequence[keras.Model]) -> None:
    """Checks that every static model maps `net`'s input shape to `net`'s
    number of logits.

    Raises:
        ValueError: empty list, a non-Keras or subclassed model (shapes
            unknown), or a different input shape or number of logits (the
            message names the model and both shapes).
    """
    if not static_models:
        raise ValueError("ensemble adversarial training needs at least one "
                         "static pre-trained model; got none")
    want = (tuple(net.inputs[0].shape[1:]), net.outputs[0].shape[-1])
    for i, model in enumerate(static_models):
        try:
            got = (tuple(model.inputs[0].shape[1:]),
                   model.outputs[0].shape[-1])
        except (AttributeError, TypeError, IndexError):
            raise ValueError(
                f"static model {i} must be a Functional or Sequential "
                f"keras.Model with known shapes; got {model!r}") from None
        if got != want:
            raise ValueError(
                f"static model {i} ({model.name}) maps inputs {got[0]} to "
                f"{got[1]} logits but the trained network maps {want[0]} to "
                f"{want[1]}; static models must share its input and classes")


@keras.saving.register_keras_serializable(package="robust_recipes")
class EnsembleAdversarialTrainer(AdversarialTrainer):
    """Trains `net` on batches whose last `k = round(adv_fraction * m)`
    examples are replaced by adversarial examples crafted on one source per
    step: `net` itself or one of the frozen `static_models`.

    Args:
        net: `keras.Model` from float32 `(batch, height, width, channels)`
            images in [0, 1] to logits `(batch, classes)`.
        static_models: pre-trained `keras.Model`s with `net`'s input shape
            and classes; set `trainable = False` here.
        attack: a single-step attack config for `attacks.from_config`, e.g.
            `{"name": "fgsm", "eps": 0.1}`.
        adv_fraction: k / m in (0, 1]; 0.5 in the paper.
        adv_weight: Kurakin et al.'s lambda > 0, the weight of the
            adversarial examples' loss (1: the plain batch mean).
        selection: one of `SELECTIONS` ("random" as in the paper).
        labels: one of `LABELS`: craft on the true labels or on the source
            model's predictions (the authors' code).
        seed: int seed of the "random" selection.
        **kwargs: passed to `keras.Model` (and `rng_seed`, the seed of an
            unseeded random attack's draws under JAX, to
            `AdversarialTrainer`).

    Raises:
        ValueError: a bad `adv_fraction`, `adv_weight`, `selection` or
            `labels` (naming the accepted values), or static models that
            do not fit `net` (see `check_static_models`).
        KeyError / TypeError: unknown attack name or argument.
    """

    def __init__(self, net: keras.Model, static_models: Sequence[keras.Model],
                 attack: Mapping[str, Any], adv_fraction: float = 0.5,
                 adv_weight: float = 1.0, selection: str = "random",
                 labels: str = "true", seed: int = 0, **kwargs):
        if not 0.0 < adv_fraction <= 1.0:
            raise ValueError(f"adv_fraction must be in (0, 1]; got "
                             f"{adv_fraction!r}")
        if not adv_weight > 0.0:
            raise ValueError(f"adv_weight must be > 0; got {adv_weight!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}; got "
                             f"{selection!r}")
        if labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}; got "
                             f"{labels!r}")
        check_static_models(net, static_models)
        super().__init__(net, attack=None, alpha=0.0, **kwargs)
        self.attack = dict(attack)
        self._craft = attacks.from_config(self.attack)
        # An unseeded random attack (rfgsm) gets a seed pair per step from
        # the trainer's generator, drawn before the switch.
        self._seed_attack = (
            self.attack.get("seed") is None and self.seed_generator is not
            None and "seed" in inspect.signature(attacks.get_attack(
                self.attack["name"])).parameters)
        for model in static_models:
            model.trainable = False
        self.static_models = list(static_models)
        self.adv_fraction = float(adv_fraction)
        self.adv_weight = float(adv_weight)
        self.selection = selection
        self.labels = labels
        self.seed = int(seed)

    @property
    def sources(self) -> list[keras.Model]:
        """`[net, static_1, ..., static_k]`; `source_index` points here."""
        return [self.net, *self.static_models]

    def source_index(self, step: Any = None) -> Any:
        """int32 scalar tensor: the source of this step's adversarial
        examples, from the optimizer step (round robin) or a stateless draw
        seeded by `(seed, optimizer step)` (random). `step`: the step
        (default: `optimizer.iterations`)."""
        if step is None:
            step = self.optimizer.iterations
        step = ops.cast(step, keras.backend.standardize_dtype(step.dtype))
        n = len(self.sources)
        if self.selection == "round_robin":
            return ops.cast(step % n, "int32")
        # core.backends reduces a seed pair mod 2**31 - 1: reducing the int
        # first changes nothing and keeps it in int32 under JAX.
        pair = ops.stack([ops.convert_to_tensor(self.seed % (2 ** 31 - 1),
                                                ops.dtype(step)), step])
        return primitives.uniform((), pair, 0, n, "int32")

    def mixed_batch(self, data, step: Any = None):
        """`(x_mix, y, sample_weight)` for the stock step: the first m - k
        examples clean, the last k adversarial, weighted so that the mean
        loss is Kurakin et al.'s L (see the module doc). `step`: the
        optimizer step that picks the source (default:
        `optimizer.iterations`)."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        m, k = self._split(x)
        x_src = x[m - k:]
        y_src = None if self.labels == "predicted" else y[m - k:]
        kw = self.attack_seed()
        branches = [functools.partial(self._craft, model, x_src, y_src,
                                      **kw) for model in self.sources]
        x_adv = ops.stop_gradient(ops.switch(self.source_index(step),
                                             branches))
        x_mix = ops.concatenate([x[:m - k], ops.cast(x_adv, x.dtype)], 0)
        m_f, k_f = ops.cast(m, "float32"), ops.cast(k, "float32")
        scale = m_f / (m_f - k_f + self.adv_weight * k_f)
        weights = ops.concatenate([ops.full((m - k,), scale),
                                   ops.full((k,), scale * self.adv_weight)],
                                  0)
        if sample_weight is not None:
            weights *= ops.cast(sample_weight, "float32")
        return x_mix, y, weights

    def _split(self, x):
        """`(m, k)`: the batch size and the number of adversarial examples
        `round(adv_fraction * m)` (float32, half to even); Python ints when
        the batch size is static (always under JAX), else int32 tensors."""
        m = ops.shape(x)[0]
        if isinstance(m, int):
            return m, int(np.round(np.float32(self.adv_fraction) *
                                   np.float32(m)))
        k = ops.round(self.adv_fraction * ops.cast(m, "float32"))
        return m, ops.cast(k, "int32")

    def train_step(self, *args):
        # The parent step (attack=None) leaves the batch as given and makes
        # the logs per-worker; `mixed_batch` reads the optimizer step
        # (under JAX, its value in the trainer state, which
        # `backends.prepared_train_step` maps while the batch is crafted).
        return backends.prepared_train_step(
            self, args, self.mixed_batch, super().train_step)

    def get_config(self):
        config = super().get_config()
        config.pop("alpha", None)
        return {
            **config,
            "static_models": [keras.saving.serialize_keras_object(m)
                              for m in self.static_models],
            "adv_fraction": self.adv_fraction,
            "adv_weight": self.adv_weight,
            "selection": self.selection,
            "labels": self.labels,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["static_models"] = [keras.saving.deserialize_keras_object(c)
                                   for c in config["static_models"]]
        return super().from_config(config)


def load_static_models(paths: Sequence[str]) -> list[keras.Model]:
    """Loads the `.keras` files of `paths` (inside the caller's
    distribution strategy scope, so their variables are mirrored).

    Raises:
        ValueError: no paths (the message says how to pass them), or a path
            that is missing or not a loadable Keras model (named).
    """
    paths = tuple(paths or ())
    if not paths:
        raise ValueError(
            "train.static_models is empty: ensemble adversarial training "
            "crafts examples on pre-trained static models; train them first "
            "(see recipes/ensemble_at_cnn_fmnist.py) and pass "
            "--recipe.train.static_models=\"('/path/a/model.keras',"
            "'/path/b/model.keras')\"")
    models = []
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"static model {path!r} does not exist "
                             f"(train.static_models={paths})")
        try:
            models.append(keras.saving.load_model(path, compile=False))
        except Exception as e:  # noqa: BLE001 - re-raised with the path
            raise ValueError(f"static model {path!r} is not a loadable "
                             f".keras model: {e}") from e
    return models


@register_method("ensemble")
def from_recipe(cfg, net: keras.Model,
                teacher: keras.Model | None = None):
    """(`EnsembleAdversarialTrainer`, loss, metrics) for `train.method ==
    "ensemble"`, reading `cfg.attack` and `cfg.train.{static_models,
    adv_fraction, adv_weight, source_selection, attack_labels, seed,
    label_smoothing}`.

    Raises:
        ValueError: see `load_static_models` and `check_static_models`.
    """
    del teacher  # single-stage method (training.build_trainer's signature)
    t = cfg.train
    model = EnsembleAdversarialTrainer(
        net, load_static_models(t.static_models), cfg.attack.to_dict(),
        adv_fraction=t.adv_fraction, adv_weight=t.adv_weight,
        selection=t.source_selection, labels=t.attack_labels, seed=t.seed)
    return model, classification_loss(t.label_smoothing), [
        "accuracy"]
