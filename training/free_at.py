"""Free adversarial training (Shafahi, Najibi, Ghiasi, Xu, Dickerson, Studer,
Davis, Taylor, Goldstein 2019, "Adversarial Training for Free!", arXiv
1904.12843, Algorithm 1).

Each minibatch is replayed `m` times. In a replay ONE forward/backward pass
at `x_adv = clip(x + delta, 0, 1)` gives both the parameter gradient (the
optimizer takes its step) and the gradient with respect to `delta`, which
takes an FGSM step of size eps: `delta <- clip(delta + eps * sign(g), -eps,
eps)`. `delta` starts at 0 and is carried across replays and across
minibatches, so the perturbation keeps getting stronger for free. The paper
trains for N_ep / m epochs (N_ep: the natural-training epochs) so that the
number of gradient computations equals natural training's; CIFAR-10: eps
8/255, m = 8, WRN-32-10 (Table 1 / Sec. 4).

As in both reference implementations (the authors' TF code
ashafahi/free_adv_train, `free_train.py`, and their PyTorch ImageNet code),
the gradient is taken with respect to `delta` through the clip to [0, 1]:
it is zero at pixels where `x + delta` leaves the box, so `delta` does not
move there.
"""

from __future__ import annotations

import keras
import numpy as np
from absl import logging
from keras import ops

from core import backends
from core.keras_internals import track_loss
from training import register_method
from training.adversarial import AdversarialTrainer
from training.losses import classification_loss

_Schedule = keras.optimizers.schedules.LearningRateSchedule
TOO_LARGE = ("FreeAdversarialTrainer: the batch is larger than the "
             "per-replica batch its delta was built for")


def _check(eps, replays) -> None:
    if isinstance(replays, bool) or not isinstance(
            replays, (int, np.integer)) or replays < 1:
        raise ValueError(f"replays must be an integer >= 1; got {replays!r}")
    if not isinstance(eps, (int, float, np.number)) or not (
            np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")


def _replicas(model: keras.Model) -> int:
    """The replicas a step's batch is split across: the `tf.distribute`
    strategy's (TensorFlow), 1 under JAX (the step sees the global batch)."""
    strategy = getattr(model, "distribute_strategy", None)
    return 1 if strategy is None else strategy.num_replicas_in_sync


def _check_batch(batch, rows: int) -> None:
    """Raises ValueError(`TOO_LARGE`) for a batch of known size (a Python
    int: always under JAX) larger than `rows`; a batch known only at run
    time is checked by the slice of `_delta_rows`."""
    if isinstance(batch, int) and batch > rows:
        raise ValueError(f"{TOO_LARGE}: batch {batch} > {rows}")


@keras.saving.register_keras_serializable(package="robust_recipes")
class FreeAdversarialTrainer(AdversarialTrainer):
    """Wraps `net` and trains it with free adversarial training (Shafahi et
    al. 2019, arXiv 1904.12843, Algorithm 1): every minibatch is replayed
    `replays` times, each replay one optimizer step on
    `x_adv = clip(x + delta, 0, 1)` and one FGSM step of `delta` from the
    same backward pass.

    `delta` is a non-trainable float32 variable of shape `(per-replica
    batch, height, width, channels)` with values in `[-eps, eps]`, created
    in `build()` from the GLOBAL batch shape divided by the strategy's
    `num_replicas_in_sync`. Under `tf.distribute` it is an ON_READ variable:
    every replica keeps and updates its own `delta` (its own slice of the
    data); reading it across replicas (saving, `get_weights`) gives the
    mean. Under JAX the step sees the global batch (Keras shards it
    through `keras.distribution`), so `delta` has the global batch's
    shape. It is saved with the trainer, so a resumed run keeps it; a saved
    `delta` of another shape (another replica count) is ignored on loading
    and training restarts from 0 (a warning is logged). A batch smaller
    than the variable (a last, partial batch; train.py drops those) uses
    and updates the first rows of `delta` only.

    The optimizer takes `replays` steps per minibatch. A learning-rate
    schedule passed to `compile()` is therefore read at the minibatch count
    `optimizer.iterations // replays`, so that schedules written in
    minibatch steps (as `optimization.build_schedule` writes them) keep
    their epoch boundaries; the official code's schedule (in replay steps,
    boundaries 40k / 60k of 80k) is the same in fractions of training.

    Training-step metrics and the logged loss are those of the last replay
    (on its adversarial batch); `test_step` (validation) is clean.

    Args:
        net: a `keras.Model` mapping float32 `(batch, height, width,
            channels)` images in `[0, 1]` to logits `(batch, classes)`.
        eps: L-inf radius on the [0, 1] pixel scale (e.g. `8 / 255`),
            >= 0; also the FGSM step on `delta` (Algorithm 1).
        replays: the paper's m, an integer >= 1.
        **kwargs: passed to `keras.Model`.

    Call arguments:
        x: float32 `(batch, height, width, channels)` in `[0, 1]`.
        training: Python bool, forwarded to `net`.

    Raises:
        ValueError: `eps` negative or not finite, `replays` not an integer
            >= 1; in `build()`, an unknown batch size or a global batch not
            divisible by the number of replicas; in a step, a training batch
            of known size larger than the per-replica batch `delta` was
            built for (`TOO_LARGE`).
        tf.errors.InvalidArgumentError: under TensorFlow, a training batch
            whose size is only known at run time and is larger than that.
    """

    def __init__(self, net: keras.Model, eps: float = 8 / 255,
                 replays: int = 8, **kwargs):
        _check(eps, replays)
        super().__init__(net, attack=None, alpha=0.0, **kwargs)
        self.eps = float(eps)
        self.replays = int(replays)
        self.delta = None

    def build(self, input_shape):
        super().build(input_shape)
        batch = input_shape[0]
        replicas = _replicas(self)
        if batch is None or batch % replicas:
            raise ValueError(
                "FreeAdversarialTrainer needs a known global batch size "
                f"divisible by the {replicas} replica(s) to size its "
                f"perturbation; got input_shape {tuple(input_shape)}")
        self.delta = keras.Variable(
            initializer="zeros", shape=(batch // replicas,
                                        *input_shape[1:]),
            dtype="float32", trainable=False, name="delta",
            synchronization="on_read", aggregation="mean")

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        opt = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        lr = getattr(opt, "_learning_rate", None)
        if isinstance(lr, _Schedule) and not isinstance(
                lr, MinibatchSchedule):
            opt.learning_rate = MinibatchSchedule(lr, self.replays)

    def compile_from_config(self, config):
        # Keras skips compile() on loading when a model overrides it; this
        # is the stock compile_from_config without that check.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, *args):
        # The backend's calling convention (TF: `(data)` -> logs, JAX:
        # `(state, data)` -> `(logs, state)`) around the stateful `step`.
        return self.backend_logs(backends.train_step(self, args, self.step))

    def step(self, data):
        """Algorithm 1's inner loop on one minibatch in stateful style
        (under JAX, core.backends maps the trainer's state onto its
        variables): `replays` optimizer steps and FGSM steps of `delta`;
        returns the logs of the last replay."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = ops.cast(x, "float32")
        batch = ops.shape(x)[0]
        _check_batch(batch, self.delta.shape[0])
        weights = self.trainable_weights
        for replay in range(self.replays):  # Algorithm 1, inner loop
            last = replay == self.replays - 1
            delta = self._delta_rows(batch)

            def loss_fn(delta, last=last):
                x_adv = ops.clip(x + delta, 0.0, 1.0)
                y_pred = self(x_adv, training=True)
                loss = self.compute_loss(
                    x=x_adv, y=y, y_pred=y_pred, sample_weight=sample_weight,
                    training=True)
                if last:
                    track_loss(self, loss, batch)
                return self.optimizer.scale_loss(loss), (x_adv, y_pred)

            _, (x_adv, y_pred), grads, (grad_delta,) = backends.gradients(
                loss_fn, weights, [delta])
            self.optimizer.apply_gradients(zip(grads, weights))
            self._step_delta(delta, grad_delta, batch)
        return self.compute_metrics(x_adv, y, y_pred,
                                    sample_weight=sample_weight)

    def _delta_rows(self, batch):
        """The first `batch` rows of `delta` (a tensor). A batch of known
        size was checked by `_check_batch`; under TensorFlow one known only
        at run time and too large fails in the slice (`ops.slice` refuses a
        size beyond the rows, where `[:batch]` would clip it)."""
        delta = ops.convert_to_tensor(self.delta)
        if isinstance(batch, int):
            return delta[:batch]
        return ops.slice(delta, [0] * len(self.delta.shape),
                         [batch, *self.delta.shape[1:]])

    def _step_delta(self, delta, grad, batch):
        """`delta <- clip(delta + eps * sign(grad), -eps, eps)` on the first
        `batch` rows. A non-finite gradient (a skipped mixed-precision step)
        leaves those pixels unchanged."""
        grad = ops.where(ops.isfinite(grad), grad, ops.zeros_like(grad))
        new = ops.clip(delta + self.eps * ops.sign(grad), -self.eps,
                       self.eps)
        rest = ops.convert_to_tensor(self.delta)[batch:]
        self.delta.assign(ops.concatenate([new, rest], axis=0))

    def load_own_variables(self, store):
        saved = store["0"] if "0" in store else None
        if (self.delta is not None and saved is not None
                and tuple(saved.shape) != tuple(self.delta.shape)):
            logging.warning(
                "FreeAdversarialTrainer: the saved delta has shape %s, this "
                "run's per-replica batch needs %s; delta restarts from 0",
                tuple(saved.shape), tuple(self.delta.shape))
            return
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        for key in ("attack", "alpha"):
            config.pop(key, None)
        return {**config, "eps": self.eps, "replays": self.replays}


@keras.saving.register_keras_serializable(package="robust_recipes")
class MinibatchSchedule(_Schedule):
    """Reads `schedule` at the minibatch count `step // replays`, where
    `step` counts optimizer steps and each minibatch takes `replays` of
    them (free adversarial training). Returns `schedule`'s float32 learning
    rate, constant across one minibatch's replays."""

    def __init__(self, schedule: _Schedule, replays: int):
        self.schedule = schedule
        self.replays = int(replays)

    def __call__(self, step):
        return self.schedule(step // self.replays)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(
            self.schedule), "replays": self.replays}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(
            config["schedule"])
        return cls(**config)


@register_method("free")
def from_recipe(cfg, net: keras.Model,
                teacher: keras.Model | None = None):
    """(`FreeAdversarialTrainer` around `net`, its loss, its metrics) for a
    recipe config with `train.method == "free"`: eps from `cfg.attack.eps`
    (an L-inf `common.pgd(...)` section; its step size and steps are not
    used: the step is eps, one per replay), m from `cfg.train.replays`, the
    cross-entropy of `cfg.train.label_smoothing`.

    Raises:
        ValueError: no attack section, `cfg.attack.norm != "inf"`, or a bad
            eps / replays (see `FreeAdversarialTrainer`).
    """
    del teacher  # single-stage method (training.build_trainer's signature)
    if cfg.attack is None or cfg.attack.get("norm", "inf") != "inf":
        norm = None if cfg.attack is None else cfg.attack.norm
        raise ValueError("free adversarial training needs an L-inf attack "
                         f"section (attack.norm 'inf'); got norm {norm!r}")
    model = FreeAdversarialTrainer(net, eps=cfg.attack.eps,
                                   replays=cfg.train.replays)
    return (model, classification_loss(cfg.train.label_smoothing),
            ["accuracy"])
