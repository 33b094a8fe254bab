"""`robust_accuracy`: clean and robust accuracy of a model over a dataset,
under any `tf.distribute` strategy.

Robust accuracy is the fraction of examples still classified correctly
after the attack; for a targeted attack the report also gives the attack
success rate (fraction classified as the target), as Xie et al. 2019
(arXiv 1812.03411, Sec. 5) recommend for comparing attackers and defenders.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf


def _replica_counts(model, attack_fn, x, y, num_classes, targeted, seed):
    logits = model(x, training=False)
    clean = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y)
    target = y
    if targeted:
        # One random wrong label per image (Xie et al. 2019, Sec. 5).
        shift = tf.random.stateless_uniform(
            tf.shape(y), seed, 1, num_classes, dtype=tf.int32)
        target = (y + shift) % num_classes
    x_adv = attack_fn(model, x, target)
    pred = tf.argmax(model(x_adv, training=False), -1, output_type=tf.int32)
    delta = tf.reshape(x_adv - x, [tf.shape(x)[0], -1])
    return {
        "n": tf.size(y),
        "clean_correct": tf.reduce_sum(tf.cast(clean, tf.int32)),
        "robust_correct": tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.int32)),
        "target_hit": tf.reduce_sum(tf.cast(tf.equal(pred, target),
                                            tf.int32)),
        "max_linf": tf.reduce_max(tf.abs(delta)),
        "max_l2": tf.reduce_max(tf.norm(delta, axis=1)),
    }


def robust_accuracy(model: keras.Model, dataset: tf.data.Dataset,
                    attack_fn: Callable[..., tf.Tensor], *,
                    num_classes: int, targeted: bool = False,
                    strategy: tf.distribute.Strategy | None = None,
                    seed: int = 0, steps: int | None = None,
                    verbose: int = 1, eager: bool = False) -> dict[str, Any]:
    """Runs `attack_fn(model, x, y)` over `dataset` and counts.

    Args:
        model: `x` float32 `(batch, height, width, channels)` in [0, 1] ->
            logits `(batch, classes)`; called with `training=False`.
        dataset: batches of `(x, y)`, y int32 `(batch,)` (global batches).
        attack_fn: bound attack (`attacks.from_config`); called with target
            labels when `targeted`.
        num_classes: number of classes (for random targets).
        targeted: draw one random wrong target label per image.
        strategy: distribution strategy (default: the current one).
        seed: seed of the random targets.
        steps: number of batches, for a progress bar; None if unknown.
        verbose: 1 shows a Keras progress bar.
        eager: run each batch eagerly instead of in a `tf.function`; needed
            by the attacks of `attacks.EAGER_ONLY` (host-side loops).

    Returns:
        dict with `n`, `clean_acc`, `robust_acc`, `attack_success_rate`
        (targeted only, else None), and `max_linf` / `max_l2`, the largest
        perturbation found (a check that the threat model held).
    """
    strategy = strategy or tf.distribute.get_strategy()
    dist = strategy.experimental_distribute_dataset(dataset)

    def step(batch, index):
        def replica(x, y):
            seed_pair = tf.stack([tf.constant(seed, tf.int32), index])
            return _replica_counts(model, attack_fn, x, tf.cast(y, tf.int32),
                                   num_classes, targeted, seed_pair)

        out = strategy.run(replica, args=batch)
        # ReduceOp has no MAX: take it over this process's replicas.
        return {k: tf.reduce_max(tf.stack(
                    strategy.experimental_local_results(v)))
                if k.startswith("max") else strategy.reduce("SUM", v, None)
                for k, v in out.items()}

    if not eager:
        step = tf.function(step)
    totals = {"n": 0, "clean_correct": 0, "robust_correct": 0,
              "target_hit": 0, "max_linf": 0.0, "max_l2": 0.0}
    bar = keras.utils.Progbar(steps, verbose=verbose, unit_name="batch")
    for i, batch in enumerate(dist):
        out = {k: v.numpy() for k, v in step(batch, tf.constant(i)).items()}
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
