"""Defensive distillation (Papernot, McDaniel, Wu, Jha, Swami 2016,
"Distillation as a Defense to Adversarial Perturbations against Deep Neural
Networks", arXiv 1511.04508, Sec. IV).

Two stages at a temperature T (T = 100 in the paper's Table / Sec. V):
1. the teacher is trained on the hard labels with softmax(z / T);
2. the student (same architecture) is trained with softmax(z / T) on the
   teacher's soft labels softmax(z_teacher(x) / T);
at test time the student is used at T = 1, i.e. its raw logits z. Its logits
are then ~T times larger than a normally trained network's, the softmax
saturates, and cross-entropy gradients vanish: FGSM/PGD on the CE loss fail,
while attacks on the logits (C&W, Carlini & Wagner 2016, arXiv 1607.04311)
succeed. The model stores plain logits; T lives only in the training loss.
"""

from __future__ import annotations

import keras
from keras import ops

from core import backends
from training import register_method


@keras.saving.register_keras_serializable(package="robust_recipes")
class SoftTargetCrossentropy(keras.losses.Loss):
    """Cross-entropy between target probabilities `y_true` (batch, classes)
    and softmax(`y_pred` / T), `y_pred` logits (batch, classes), per example.
    Integer labels `y_true` of shape (batch,) or (batch, 1) are taken as
    one-hot (Keras builds the compiled loss once on the raw labels).

    Raises:
        ValueError: `temperature <= 0`.
    """

    def __init__(self, temperature: float = 1.0,
                 name: str = "soft_target_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature!r}")
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32") / self.temperature
        if len(y_true.shape) == 1 or (y_true.shape[-1] == 1
                                      and logits.shape[-1] != 1):
            y_true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)),
                                          "int32"), logits.shape[-1])
        return ops.categorical_crossentropy(
            ops.cast(y_true, "float32"), logits, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="robust_recipes")
class DistillationTrainer(keras.Model):
    """Trains `net` at temperature T on one-hot labels (teacher stage,
    `teacher=None`) or on the teacher's soft labels at T (student stage).

    Compile it with `SoftTargetCrossentropy(T)` and
    `keras.metrics.CategoricalAccuracy`: every step hands the stock Keras
    step targets of shape (batch, classes). Validation (`test_step`) always
    uses the one-hot true labels, so `val_accuracy` is the usual accuracy.

    Args:
        net: a `keras.Model` from float32 images `(batch, H, W, C)` in
            `[0, 1]` to logits `(batch, classes)`.
        temperature: T > 0 (Papernot et al. use 100).
        teacher: None, or the trained teacher `keras.Model` (frozen, called
            with `training=False`).

    Raises:
        ValueError: `temperature <= 0`.
    """

    def __init__(self, net: keras.Model, temperature: float = 100.0,
                 teacher: keras.Model | None = None, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature!r}")
        self.net = net
        self.temperature = float(temperature)
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False

    def call(self, x, training=False):
        return self.net(x, training=training)

    def build(self, input_shape):
        if not self.net.built:
            self.net.build(input_shape)
        self.built = True

    def _one_hot(self, y):
        classes = self.net.output_shape[-1]
        return ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), classes)

    def soft_batch(self, data):
        """`(x, targets, sample_weight)` of a training step: one-hot labels
        (teacher stage) or the teacher's softmax at T (student stage)."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.teacher is None:
            target = self._one_hot(y)
        else:
            z = ops.cast(self.teacher(x, training=False), "float32")
            target = ops.stop_gradient(ops.softmax(z / self.temperature))
        return keras.utils.pack_x_y_sample_weight(x, target, sample_weight)

    def train_step(self, *args):
        # Keras's own step of the backend (TF: `(data)`, JAX: `(state,
        # data)`) on the soft targets (core.backends).
        return backends.prepared_train_step(self, args, self.soft_batch,
                                            super().train_step)

    def test_step(self, *args):
        # The data is the last argument under both backends (JAX: `(state,
        # data)`); the labels need no weights.
        *state, data = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return super().test_step(*state, keras.utils.pack_x_y_sample_weight(
            x, self._one_hot(y), sample_weight))

    def get_config(self):
        return {
            **super().get_config(),
            "net": keras.saving.serialize_keras_object(self.net),
            "temperature": self.temperature,
            "teacher": None if self.teacher is None else
            keras.saving.serialize_keras_object(self.teacher),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["net"] = keras.saving.deserialize_keras_object(config["net"])
        if config.get("teacher") is not None:
            config["teacher"] = keras.saving.deserialize_keras_object(
                config["teacher"])
        return cls(**config)


@register_method("distillation")
def from_recipe(cfg, net: keras.Model,
                teacher: keras.Model | None = None):
    """(`DistillationTrainer`, `SoftTargetCrossentropy`, metrics) at
    `cfg.train.temperature`; `teacher=None` is the teacher stage."""
    t = cfg.train.temperature
    return (DistillationTrainer(net, t, teacher), SoftTargetCrossentropy(t),
            [keras.metrics.CategoricalAccuracy(name="accuracy")])
