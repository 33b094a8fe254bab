"""`AdversarialTrainer`: a `keras.Model` whose `train_step` trains on
adversarial examples, so that `fit()` gives callbacks, progress bars and
every `tf.distribute` strategy for free.

Each step crafts `x_adv = attack(net, x, y)` with the network called with
`training=False` (BatchNorm in inference mode, its statistics untouched),
stops the gradient through it, and takes the usual gradient step on the loss
of Goodfellow et al. 2015 (arXiv 1412.6572, Eq. 6):

    J~(x, y) = alpha * J(x, y) + (1 - alpha) * J(x_adv, y)

`alpha = 0` is pure adversarial training (Madry et al. 2018, arXiv
1706.06083, Eq. 2.1); `alpha = 1` or `attack=None` is natural training.

Two optional keys of the attack config shape the training attack of Xie et
al. 2019 (arXiv 1812.03411; its released code's adv_model.py / main.py):
`"target": "random"` attacks towards a uniformly random wrong label per
example, redrawn every step (with `"targeted": True`), and
`"prob_start_from_clean": p` starts the whole batch from `x` itself with
probability p (one scalar draw per step and replica) instead of from a
random point of the eps-ball. Without these keys the attack is unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import keras
from keras import ops

import attacks
from attacks import primitives
from core import backends
from core.keras_internals import MultiWorkerFitFix
from training import register_method
from training.losses import classification_loss

# The attack-config keys that the trainer itself consumes (module doc).
TRAINING_ATTACK_KEYS = ("target", "prob_start_from_clean")
TARGETS = ("label", "random")



@keras.saving.register_keras_serializable(package="robust_recipes")
class AdversarialTrainer(MultiWorkerFitFix, keras.Model):
    """Wraps `net` and trains it on adversarial examples.

    Args:
        net: a `keras.Model` mapping float32 `(batch, height, width,
            channels)` images in `[0, 1]` to logits `(batch, classes)`.
        attack: an attack config (`{"name": "pgd", "eps": 0.1, ...}`, see
            `attacks.from_config`) or None for natural training. Optional
            keys `target` (one of `TARGETS`: "label" attacks `y`, the
            default; "random" a uniformly random wrong label per example,
            redrawn each step, which needs `targeted=True`) and
            `prob_start_from_clean` (float in [0, 1], default 0: the
            chance that a step's attack starts at `x` rather than at a
            random point; needs an attack with `rand_init=True`).
        alpha: weight of the clean loss in [0, 1] (Goodfellow et al. 2015,
            Eq. 6); 0 trains on adversarial examples only.
        rng_seed: int seed of the trainer's own random draws (its
            `keras.random.SeedGenerator`, which the attack and the random
            targets use inside the compiled step when the attack config
            has no seed); None derives it from the global seed
            (`keras.utils.set_random_seed`). Its state is a variable of the
            trainer, so `training.resume` saves and restores it and a
            resumed run draws what an uninterrupted one would.
        **kwargs: passed to `keras.Model`.

    Call arguments:
        x: float32 `(batch, height, width, channels)` in `[0, 1]`.
        training: Python bool, forwarded to `net`.

    Returns (call):
        logits of `net`, float32 `(batch, classes)`.

    Raises:
        ValueError: `alpha` outside [0, 1]; a `target` not in `TARGETS`,
            "random" without `targeted=True`; `prob_start_from_clean`
            outside [0, 1] or set without `rand_init=True`.
        KeyError / TypeError: unknown attack name or argument.

    Training-step metrics are measured on the inputs the step trains on
    (the adversarial batch, or clean + adversarial when `0 < alpha < 1`);
    `test_step` (validation) is clean.
    """

    def __init__(self, net: keras.Model, attack: Mapping[str, Any] | None =
                 None, alpha: float = 0.0, rng_seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
        # The trainer owns one generator (part of its state, so it advances
        # step after step and a backup restores it): jax.jit needs an
        # explicit seed for every draw, and an exact resume needs a state
        # that TensorFlow's global stateful generator does not expose.
        self.rng_seed = rng_seed
        self.seed_generator = keras.random.SeedGenerator(rng_seed)
        self.net = net
        self.attack = None if attack is None else dict(attack)
        self.alpha = float(alpha)
        self._attack_fn = self._clean_start_fn = None
        self._target, self._prob_clean = "label", 0.0
        if attack is not None:
            self._build_attack(self.attack)

    def _build_attack(self, attack):
        kwargs = {k: v for k, v in attack.items()
                  if k not in TRAINING_ATTACK_KEYS}
        self._target = attack.get("target", "label")
        self._prob_clean = float(attack.get("prob_start_from_clean", 0.0))
        if self._target not in TARGETS:
            raise ValueError(f"attack target must be one of {TARGETS}; got "
                             f"{self._target!r}")
        if self._target == "random" and not kwargs.get("targeted"):
            raise ValueError("attack target='random' needs targeted=True; "
                             f"got targeted={kwargs.get('targeted')!r}")
        if not 0.0 <= self._prob_clean <= 1.0:
            raise ValueError("attack prob_start_from_clean must be in [0, "
                             f"1]; got {self._prob_clean!r}")
        if self._prob_clean and not kwargs.get("rand_init", True):
            raise ValueError("attack prob_start_from_clean needs rand_init="
                             f"True; got rand_init={kwargs.get('rand_init')!r}")
        # An unseeded attack gets a fresh seed pair per step from the
        # trainer's generator, drawn before any branch (`attack_seed`).
        self._seed_attack = (
            kwargs.get("seed") is None and self.seed_generator is not None
            and "seed" in inspect.signature(
                attacks.get_attack(kwargs["name"])).parameters)
        self._attack_fn = attacks.from_config(kwargs)
        if self._prob_clean:
            self._clean_start_fn = attacks.from_config(
                {**kwargs, "rand_init": False})

    def attack_labels(self, y):
        """The labels the attack is given: `y` itself, or for `target ==
        "random"` `(y + U{1, ..., K - 1}) mod K`, a uniformly random wrong
        label per example (K = the width of the net's output; Xie et al.
        2019)."""
        if self._target != "random":
            return y
        y = ops.cast(ops.reshape(y, (-1,)), "int32")
        k = self.net.output_shape[-1]
        shift = primitives.uniform(ops.shape(y), self.seed_generator, 1, k,
                                   "int32")
        return (y + shift) % k

    def craft(self, x, y):
        """`(x_adv, attack labels, started_from_clean)` for a batch: x float
        `(batch, height, width, channels)` in [0, 1], y int `(batch,)`;
        `started_from_clean` is a bool scalar tensor (one draw per call)."""
        y_attack = self.attack_labels(y)
        kw = self.attack_seed()
        if self._clean_start_fn is None:
            return self._attack_fn(self.net, x, y_attack, **kw), y_attack, \
                ops.convert_to_tensor(False)
        from_clean = primitives.uniform((), self.seed_generator) < \
            self._prob_clean
        x_adv = ops.cond(
            from_clean,
            lambda: self._clean_start_fn(self.net, x, y_attack, **kw),
            lambda: self._attack_fn(self.net, x, y_attack, **kw))
        return x_adv, y_attack, from_clean

    def attack_seed(self) -> dict:
        """`{"seed": pair}` with a fresh seed pair from the trainer's
        generator when the attack is unseeded, else `{}`."""
        if not getattr(self, "_seed_attack", False):
            return {}
        return {"seed": self.seed_generator.next()}

    def call(self, x, training=False):
        return self.net(x, training=training)

    def build(self, input_shape):
        self.net.build(input_shape)
        self.built = True

    def _adversarial_batch(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self._attack_fn is None or self.alpha == 1.0:
            return data
        x_adv = ops.stop_gradient(self.craft(x, y)[0])
        return self.mix_batch(x, x_adv, y, sample_weight)

    def mix_batch(self, x, x_adv, y, sample_weight=None):
        """The `(x, y, sample_weight)` a step trains on (Goodfellow et al.
        2015, Eq. 6): `x_adv` alone when `alpha = 0`, else `[x; x_adv]`
        along the batch axis with weights `2 alpha` and `2 (1 - alpha)`
        (times `sample_weight`; None counts as ones)."""
        if self.alpha == 0.0:
            return keras.utils.pack_x_y_sample_weight(x_adv, y, sample_weight)
        if sample_weight is None:
            sample_weight = ops.ones(ops.shape(y)[:1], "float32")
        # "sum_over_batch_size" divides by 2B, hence the factor 2: the mean
        # is then alpha * mean(clean loss) + (1 - alpha) * mean(adv loss).
        weights = ops.concatenate([2.0 * self.alpha * sample_weight,
                                   2.0 * (1.0 - self.alpha) * sample_weight],
                                  0)
        return (ops.concatenate([x, ops.cast(x_adv, x.dtype)], 0),
                ops.concatenate([y, y], 0), weights)

    def train_step(self, *args):
        # Keras's own step of the backend (TF: `(data)`, JAX: `(state,
        # data)`) on the adversarial batch (core.backends).
        return self.backend_logs(backends.prepared_train_step(
            self, args, self._adversarial_batch, super().train_step))

    def test_step(self, *args):
        return self.backend_logs(super().test_step(*args))

    def backend_logs(self, out):
        """A step's result, its logs made per-worker under a multi-worker
        TF strategy; the `(logs, state)` of a JAX step pass through."""
        if backends.BACKEND == "tensorflow":
            return self.per_worker_logs(out)
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "net": keras.saving.serialize_keras_object(self.net),
            "attack": self.attack,
            "alpha": self.alpha,
            "rng_seed": self.rng_seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["net"] = keras.saving.deserialize_keras_object(config["net"])
        return cls(**config)


@register_method("adversarial")
def from_recipe(cfg, net: keras.Model,
                teacher: keras.Model | None = None):
    """(`AdversarialTrainer` around `net`, its loss, its metrics) for a
    recipe config with `train.method == "adversarial"`: the attack of
    `cfg.attack` (None: natural training), `cfg.train.alpha` and
    `cfg.train.label_smoothing`."""
    del teacher  # single-stage method (training.build_trainer's signature)
    attack = None if cfg.attack is None else cfg.attack.to_dict()
    return (AdversarialTrainer(net, attack=attack, alpha=cfg.train.alpha),
            classification_loss(cfg.train.label_smoothing), ["accuracy"])
