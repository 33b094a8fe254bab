"""The one place where the project uses private Keras API, each use cited.

Keras 3 (checked on 3.15) has no public equivalent for the six needs below.
Everything else in the project uses public Keras only; a test
(tests/test_layout.py) refuses `keras.src` anywhere but here, and
tests/core/test_keras_internals.py fails loudly, naming the missing symbol,
when a Keras upgrade moves or changes one of them.

1. `FUNCTIONAL_MODEL_TYPES`: `keras.src.models.functional.Functional`, the
   class of models built from `keras.Input` (no public alias; `keras.Model`
   is its base). `attacks.with_straight_through` must tell such a model,
   which `keras.models.clone_model` can rebuild layer by layer, from a
   subclassed one, which it cannot.
2. `track_loss`: a custom `train_step` that computes its own loss (TRADES'
   two forward passes, free AT's replays) feeds Keras's built-in loss metric
   the way Keras's own TensorFlow `train_step` does
   (keras/src/backend/tensorflow/trainer.py): the private
   `Model._loss_tracker`, with the loss un-scaled for `tf.distribute`
   (`keras.src.losses.loss.unscale_loss_for_distribution`).
3. `is_multi_worker`: Keras's own test for "this strategy spans several
   worker processes" (`_collective_all_reduce_multi_worker` of the
   TensorFlow trainer).
4. `MultiWorkerFitFix`: Keras 3.15's `fit()` fails under
   `MultiWorkerMirroredStrategy` even for a stock model
   (keras-team/keras#20585): (a) the private `Model._maybe_symbolic_build`
   reduces the first distributed batch with `strategy.reduce`, which raises
   on `PerReplica` inputs across workers; (b) `reduce_per_replica` reduces
   scalar logs with `axis=0`. The mixin builds from the first local
   replica's batch (through the private `_symbolic_build`) and returns logs
   of shape `[1]`. Only multi-worker runs take this path;
   tests/training/test_multi_worker.py runs it in two processes.
5. `flatten_layers`: every layer inside a model, nested models included
   (the private `Layer._flatten_layers`; `Model.layers` is one level only).
   `attacks.eot` and `attacks.adaptive` read each layer's `randomized` /
   `differentiable` flags through it.
6. `uses_weight_decay`: whether an optimizer's weight decay applies to a
   variable under its `exclude_from_weight_decay` rules (the private
   `Optimizer._use_weight_decay`), so that `training.optimization`'s
   coupled-L2 optimizers follow the same rules as Keras's decoupled decay.
"""

from __future__ import annotations

from typing import Any

import keras
from keras.src.losses.loss import unscale_loss_for_distribution
from keras.src.models.functional import Functional

#: Model classes that `keras.models.clone_model` rebuilds layer by layer.
FUNCTIONAL_MODEL_TYPES = (Functional, keras.Sequential)


def track_loss(model: keras.Model, loss: Any, batch_size: Any) -> None:
    """Adds a step's (scaled-for-distribution) scalar `loss` to `model`'s
    built-in "loss" metric, weighted by `batch_size` examples, as Keras's
    own TensorFlow `train_step` does.

    Raises:
        AttributeError: a Keras version without `Model._loss_tracker`.
    """
    model._loss_tracker.update_state(unscale_loss_for_distribution(loss),
                                     sample_weight=batch_size)


def is_multi_worker(strategy: Any) -> bool:
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` in multi-worker
    mode (Keras's own test; False on any other backend than TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return False
    from keras.src.backend.tensorflow.trainer import (
        _collective_all_reduce_multi_worker)

    return bool(_collective_all_reduce_multi_worker(strategy))


class MultiWorkerFitFix:
    """Mixin for a `keras.Model` subclass that makes `fit()` work under
    `MultiWorkerMirroredStrategy` (keras-team/keras#20585; module doc, 4).

    Use it first in the bases (`class T(MultiWorkerFitFix, keras.Model)`)
    and pass every `train_step` / `test_step` result through
    `per_worker_logs`. Single-worker runs are unchanged.
    """

    def per_worker_logs(self, logs: dict) -> dict:
        """`logs` as they are, or reshaped to `[1]` per value under a
        multi-worker strategy."""
        if not is_multi_worker(self.distribute_strategy):
            return logs
        return {k: keras.ops.reshape(v, [1]) for k, v in logs.items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is None or not is_multi_worker(strategy):
            return super()._maybe_symbolic_build(iterator, data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = keras.tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0], batch)
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)


def flatten_layers(layer: keras.layers.Layer, include_self: bool = True
                   ) -> list[keras.layers.Layer]:
    """Every layer inside `layer` (a model or layer), recursively through
    nested models, and `layer` itself first when `include_self`."""
    return list(layer._flatten_layers(include_self=include_self,
                                      recursive=True))


def uses_weight_decay(optimizer: keras.optimizers.Optimizer,
                      variable: Any) -> bool:
    """Whether `optimizer`'s weight decay applies to `variable` (its
    `exclude_from_weight_decay` rules)."""
    return bool(optimizer._use_weight_decay(variable))
