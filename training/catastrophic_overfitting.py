"""Early stop on catastrophic overfitting for single-step adversarial
training (Wong, Rice, Kolter 2020, "Fast is better than free: Revisiting
adversarial training", arXiv 2001.03994, Sec. 5.3).

FGSM-based training can suddenly lose all robustness to multi-step attacks
within a few steps while its FGSM accuracy keeps rising ("catastrophic
overfitting"). Wong et al. detect it by measuring PGD accuracy on a training
minibatch during training and stop, keeping the model from before the drop.
`CatastrophicOverfittingStop` does this at each epoch end.
"""

from __future__ import annotations

from typing import Any, Mapping

import keras
import numpy as np

import attacks


class CatastrophicOverfittingStop(keras.callbacks.Callback):
    """Measures PGD accuracy on a fixed batch at each epoch end; if it falls
    more than `max_drop` below the best seen so far, restores the weights of
    that best epoch and stops training.

    Args:
        x: float32 `(n, height, width, channels)` in `[0, 1]`, a fixed batch
            (Wong et al. use a training minibatch).
        y: int `(n,)` labels.
        attack: attack config for `attacks.from_config`, e.g. PGD-10.
        max_drop: accuracy drop (fraction, in (0, 1]) that counts as
            catastrophic; Wong et al.'s code stops at 0.2.

    After `fit()`, `stopped_epoch` is the 0-based epoch at which it stopped
    (None if it never did) and `history` holds `(epoch, pgd_accuracy)`. The
    accuracy is also added to the epoch logs as `heldout_pgd_accuracy` (so
    it appears in log.csv and TensorBoard when this callback runs first).

    Raises:
        ValueError: `max_drop` outside (0, 1] or `x`/`y` lengths differ.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray,
                 attack: Mapping[str, Any], max_drop: float = 0.2):
        super().__init__()
        if not 0.0 < max_drop <= 1.0:
            raise ValueError(f"max_drop must be in (0, 1]; got {max_drop!r}")
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs "
                             f"{len(y)}")
        self.x = np.asarray(x, np.float32)
        self.y = np.asarray(y, np.int32)
        self.attack_fn = attacks.from_config(dict(attack))
        self.max_drop = float(max_drop)
        self.best = -1.0
        self.best_weights = None
        self.stopped_epoch = None
        self.history: list[tuple[int, float]] = []

    def _net(self):
        return getattr(self.model, "net", self.model)

    def pgd_accuracy(self) -> float:
        """Fraction of the batch still classified correctly under attack."""
        net = self._net()
        x_adv = self.attack_fn(net, self.x, self.y)
        pred = np.argmax(keras.ops.convert_to_numpy(net(x_adv, training=False)),
                         axis=-1)
        return float(np.mean(pred == self.y))

    def on_epoch_end(self, epoch, logs=None):
        acc = self.pgd_accuracy()
        self.history.append((epoch, acc))
        if logs is not None:
            logs["heldout_pgd_accuracy"] = acc
        if acc >= self.best:
            self.best = acc
            self.best_weights = self._net().get_weights()
        elif acc < self.best - self.max_drop:
            self._net().set_weights(self.best_weights)
            self.stopped_epoch = epoch
            self.model.stop_training = True
