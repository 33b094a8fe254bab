"""`robust_accuracy`: clean and robust accuracy of a model over a dataset,
on any Keras backend, and under a `tf.distribute` strategy on TensorFlow.

Robust accuracy is the fraction of examples still classified correctly
after the attack; for a targeted attack the report also gives the attack
success rate (fraction classified as the target), as Xie et al. 2019
(arXiv 1812.03411, Sec. 5) recommend for comparing attackers and defenders.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import keras
import numpy as np
from keras import ops

from core import backends


def _replica_counts(model, attack_fn, x, y, num_classes, targeted, seed):
    logits = model(x, training=False)
    clean = ops.equal(ops.cast(ops.argmax(logits, -1), "int32"), y)
    target = y
    if targeted:
        # One random wrong label per image (Xie et al. 2019, Sec. 5).
        shift = backends.stateless_uniform(
            ops.shape(y), seed, 1, num_classes, dtype="int32")
        target = (y + shift) % num_classes
    x_adv = attack_fn(model, x, target)
    pred = ops.cast(ops.argmax(model(x_adv, training=False), -1), "int32")
    delta = ops.reshape(x_adv - x, (ops.shape(x)[0], -1))
    return {
        "n": ops.size(y),
        "clean_correct": ops.sum(ops.cast(clean, "int32")),
        "robust_correct": ops.sum(ops.cast(ops.equal(pred, y), "int32")),
        "target_hit": ops.sum(ops.cast(ops.equal(pred, target), "int32")),
        "max_linf": ops.max(ops.abs(delta)),
        "max_l2": ops.max(ops.norm(delta, axis=1)),
    }


def _is_tf_strategy(strategy: Any) -> bool:
    """Whether `strategy` is a `tf.distribute.Strategy` (which distributes
    a `tf.data.Dataset` and runs replicas), told by its methods so that
    TensorFlow is never imported here."""
    return all(hasattr(strategy, m) for m in (
        "experimental_distribute_dataset", "run", "reduce",
        "experimental_local_results"))


def _distributed_steps(model, dataset, attack_fn, strategy, counts_args,
                       seed, eager):
    """Yields each batch's counts (numpy) under a `tf.distribute` strategy:
    every replica counts its share, sums are all-reduced, maxima taken over
    this process's replicas (ReduceOp has no MAX)."""
    num_classes, targeted = counts_args

    def step(model, batch, index):
        def replica(x, y):
            seed_pair = ops.stack([ops.convert_to_tensor(seed, "int32"),
                                   index])
            return _replica_counts(model, attack_fn, x, ops.cast(y, "int32"),
                                   num_classes, targeted, seed_pair)

        out = strategy.run(replica, args=batch)
        return {k: ops.max(ops.stack(strategy.experimental_local_results(v)))
                if k.startswith("max") else strategy.reduce("SUM", v, None)
                for k, v in out.items()}

    if not eager:
        step = backends.compile_fn(step)
    for i, batch in enumerate(_distribute(strategy, dataset)):
        index = ops.convert_to_tensor(i, "int32")
        yield {k: ops.convert_to_numpy(v)
               for k, v in step(model, batch, index).items()}


def _distribute(strategy, dataset: Iterable) -> Iterable:
    """`dataset`'s batches split over the replicas of a `tf.distribute`
    strategy: a `tf.data.Dataset` by the strategy itself, other batches
    (numpy arrays) in `np.array_split` shares."""
    if all(hasattr(dataset, m) for m in ("element_spec", "prefetch",
                                          "with_options")):  # tf.data
        return strategy.experimental_distribute_dataset(dataset)

    def split(values):
        shares = np.array_split(values, strategy.num_replicas_in_sync)
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: shares[ctx.replica_id_in_sync_group])

    return ((split(x), split(y)) for x, y in _batches(dataset))


def _batches(dataset: Iterable) -> Iterable:
    """The `(x, y)` batches of `dataset` as numpy arrays (a
    `tf.data.Dataset` through its numpy iterator)."""
    it = (dataset.as_numpy_iterator() if hasattr(dataset,
                                                 "as_numpy_iterator")
          else iter(dataset))
    for x, y in it:
        yield np.asarray(x), np.asarray(y)


def _local_steps(model, dataset, attack_fn, counts_args, seed):
    """Yields each batch's counts (numpy), one eager call per batch (the
    attacks compile their own loops)."""
    num_classes, targeted = counts_args
    for i, (x, y) in enumerate(_batches(dataset)):
        out = _replica_counts(model, attack_fn, ops.convert_to_tensor(x),
                              ops.convert_to_tensor(y, "int32"), num_classes,
                              targeted, (seed, i))
        yield {k: ops.convert_to_numpy(v) for k, v in out.items()}


def robust_accuracy(model: keras.Model, dataset: Iterable,
                    attack_fn: Callable[..., Any], *,
                    num_classes: int, targeted: bool = False,
                    strategy: Any | None = None,
                    seed: int = 0, steps: int | None = None,
                    verbose: int = 1, eager: bool = False) -> dict[str, Any]:
    """Runs `attack_fn(model, x, y)` over `dataset` and counts.

    Args:
        model: `x` float32 `(batch, height, width, channels)` in [0, 1] ->
            logits `(batch, classes)`; called with `training=False`.
        dataset: batches of `(x, y)`, y int32 `(batch,)` (global batches):
            a `tf.data.Dataset`, a `keras.utils.PyDataset` or any iterable
            of array pairs.
        attack_fn: bound attack (`attacks.from_config`); called with target
            labels when `targeted`.
        num_classes: number of classes (for random targets).
        targeted: draw one random wrong target label per image.
        strategy: a `tf.distribute` strategy (TensorFlow), which splits
            each batch over its replicas. None, or another backend's strategy object, runs the
            batches one by one here.
        seed: seed of the random targets.
        steps: number of batches, for a progress bar; None if unknown.
        verbose: 1 shows a Keras progress bar.
        eager: under a `tf.distribute` strategy, run each batch eagerly
            instead of in a compiled step; needed by the attacks of
            `attacks.EAGER_ONLY` (host-side loops). Without one every batch
            runs eagerly anyway (the attacks compile their own loops).

    Returns:
        dict with `n`, `clean_acc`, `robust_acc`, `attack_success_rate`
        (targeted only, else None), and `max_linf` / `max_l2`, the largest
        perturbation found (a check that the threat model held).
    """
    counts_args = (num_classes, targeted)
    if strategy is not None and _is_tf_strategy(strategy):
        outs = _distributed_steps(model, dataset, attack_fn, strategy,
                                  counts_args, seed, eager)
    else:
        outs = _local_steps(model, dataset, attack_fn, counts_args, seed)
    totals = {"n": 0, "clean_correct": 0, "robust_correct": 0,
              "target_hit": 0, "max_linf": 0.0, "max_l2": 0.0}
    bar = keras.utils.Progbar(steps, verbose=verbose, unit_name="batch")
    for i, out in enumerate(outs):
        for k, v in out.items():
            totals[k] = max(totals[k], float(v)) if k.startswith("max") \
                else totals[k] + int(v)
        bar.update(i + 1, [("robust_acc",
                            totals["robust_correct"] / max(totals["n"], 1))])
    n = max(totals["n"], 1)
    return {
        "n": totals["n"],
        "clean_acc": totals["clean_correct"] / n,
        "robust_acc": totals["robust_correct"] / n,
        "attack_success_rate": totals["target_hit"] / n if targeted else None,
        "max_linf": totals["max_linf"],
        "max_l2": totals["max_l2"],
    }
