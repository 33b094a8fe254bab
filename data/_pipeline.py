"""Shared tail of every tf.data input pipeline: shuffle, repeat, map, batch,
prefetch (TensorFlow only; `PipelineOptions` and the argument checks live in
`data.options`, re-exported here).

tf.data autotuning is switched off on every returned dataset: with it on,
`fit()` on this project's 2-core CPU machines waited 41-48 s on the autotune
thread after the last epoch (see shared/specs/keras3_tf_notes.md). Fixed
parallelism and a small fixed prefetch are used instead.
"""

import os
from collections.abc import Callable

import tensorflow as tf

from . import augment
from .options import PipelineOptions
from .options import is_int  # noqa: F401  (re-exported)
from .options import validate_positive_int  # noqa: F401  (re-exported)

# Examples mapped in parallel; fixed because autotune is off.
PARALLEL_CALLS = max(1, min(8, os.cpu_count() or 1))
# Batches prefetched ahead of the consumer.
PREFETCH_BATCHES = 2

# fn(x, y, seed) -> (x, y) when `needs_seed`, else fn(x, y) -> (x, y).
Preprocess = Callable[..., tuple[tf.Tensor, tf.Tensor]]


def _dataset_options(shard_by_data: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    if shard_by_data:
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
    return options


def _with_seeds(ds: tf.data.Dataset, seed: int | None) -> tf.data.Dataset:
    """Pairs each element with a fresh stateless seed of shape `(2,)`."""
    # A different stream from the shuffle seed; new values every epoch.
    seed_stream = None if seed is None else seed + 1
    seeds = tf.data.Dataset.random(
        seed=seed_stream, rerandomize_each_iteration=True
    ).batch(2, drop_remainder=True)
    return tf.data.Dataset.zip((ds, seeds)).map(
        lambda example, s: (*example, s)
    )


def _seeded_epochs(ds: tf.data.Dataset, options) -> tf.data.Dataset:
    """Shuffles each epoch of an in-memory split in an order that depends on
    (seed, epoch) only.

    A seeded `shuffle(reshuffle_each_iteration=True)` gives every new
    iterator the next order, so the data would depend on how many iterators
    were made before: Keras's fit() makes one for its symbolic build, and
    under MultiWorkerMirroredStrategy the workers then saw, at random,
    another order than one device. Streaming data (a buffer smaller than the
    split, e.g. ImageNet) keeps TensorFlow's seeded shuffle.
    """
    n = int(ds.cardinality())
    if n <= 0 or options.shuffle_buffer < n:
        ds = ds.shuffle(options.shuffle_buffer, seed=options.seed,
                        reshuffle_each_iteration=True)
        return ds.repeat() if options.repeat else ds
    whole = ds.batch(n).get_single_element()  # the split is in memory
    epochs = (tf.data.Dataset.counter() if options.repeat
              else tf.data.Dataset.range(1))
    seed = tf.constant(options.seed, tf.int64)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([seed, tf.cast(epoch, tf.int64)]))
        return tf.data.Dataset.from_tensor_slices(
            tf.nest.map_structure(lambda t: tf.gather(t, order), whole))

    return epochs.flat_map(one_epoch)


def finish(
    ds: tf.data.Dataset,
    preprocess: Preprocess,
    options: PipelineOptions,
    needs_seed: bool = False,
) -> tf.data.Dataset:
    """Applies the shared pipeline tail to a per-example dataset.

    Order: cache -> shuffle (a new order each epoch; with a seed, epoch e's
    order depends on (seed, e) only) -> repeat -> map `preprocess` -> batch
    -> prefetch(`PREFETCH_BATCHES`).

    Args:
        ds: unbatched dataset of raw `(x, y)` examples.
        preprocess: maps one raw example to `(x, y)` with x float32
            `(height, width, channels)` in `[0, 1]` and y int32 `()`; it
            also receives a `(2,)` int64 seed when `needs_seed`.
        options: batching and ordering, see `PipelineOptions`.
        needs_seed: whether `preprocess` takes a per-example seed.

    Returns:
        A `tf.data.Dataset` of `(x, y)`: x float32
        `(batch, height, width, channels)` in `[0, 1]`, y int32 `(batch,)`,
        with autotune disabled.
    """
    if options.cache:
        ds = ds.cache()
    if options.shuffle and options.seed is not None:
        ds = _seeded_epochs(ds, options)
    elif options.shuffle:
        ds = ds.shuffle(options.shuffle_buffer, reshuffle_each_iteration=True)
        ds = ds.repeat() if options.repeat else ds
    elif options.repeat:
        ds = ds.repeat()
    if needs_seed:
        ds = _with_seeds(ds, options.seed)
    ds = ds.map(
        preprocess, num_parallel_calls=PARALLEL_CALLS, deterministic=True
    )
    ds = ds.batch(options.batch_size, drop_remainder=options.drop_remainder)
    ds = ds.prefetch(PREFETCH_BATCHES)
    return ds.with_options(_dataset_options(options.shard_by_data))


def simple_preprocess(
    image_size: int | None,
    channels: int | None,
    augment_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
) -> Preprocess:
    """Builds the map function for small uint8 datasets (MNIST, CIFAR).

    Args:
        image_size: optional square output size (bilinear resize).
        channels: optional output channels (3 tiles grayscale).
        augment_fn: optional `fn(x, seed) -> x` on float32 `[0, 1]`
            images, applied before resizing.

    Returns:
        `fn(x, y[, seed]) -> (x, y)` from uint8 `(height, width, channels)`
        to float32 in `[0, 1]` and int32 labels.
    """

    def fn(x, y, seed=None):
        x = augment.to_unit_float(x)
        if augment_fn is not None:
            x = augment_fn(x, seed)
        x = augment.adapt_image(x, image_size, channels)
        return x, tf.cast(y, tf.int32)

    return fn
