"""Classification losses of the trainers: softmax cross-entropy on logits
with integer labels, optionally label-smoothed."""

from __future__ import annotations

import keras


def classification_loss(label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Softmax cross-entropy on logits with integer labels `(batch,)`,
    optionally with label smoothing (Szegedy et al. 2016, arXiv 1512.00567,
    Sec. 7), which Keras's sparse loss lacks.

    Raises:
        ValueError: `label_smoothing` outside [0, 1).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"label_smoothing must be in [0, 1); got {label_smoothing!r}")
    if label_smoothing == 0.0:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return SmoothedSparseCrossentropy(label_smoothing)


@keras.saving.register_keras_serializable(package="robust_recipes")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against one-hot(y) smoothed by
    `label_smoothing`; y int `(batch,)`, logits float `(batch, classes)`."""

    def __init__(self, label_smoothing=0.1, name="smoothed_sparse_ce",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        onehot = keras.ops.one_hot(keras.ops.cast(
            keras.ops.reshape(y_true, [-1]), "int32"), y_pred.shape[-1])
        return keras.losses.categorical_crossentropy(
            onehot, y_pred, from_logits=True,
            label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(),
                "label_smoothing": self.label_smoothing}
