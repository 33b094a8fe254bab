"""The numpy input path: in-memory uint8 images fed as a
`keras.utils.PyDataset`, for Keras backends without tf.data (JAX).

It mirrors the tf.data tail of `data._pipeline.finish` on in-memory data:
pixels scaled to float32 `[0, 1]`, optional bilinear resize and
grayscale-to-RGB tiling (`data.augment.adapt_image`), shuffling whose order
in epoch `e` depends on `(seed, e)` only, optional repetition and a
dropped last batch. The orders are numpy's, not TensorFlow's: the same seed
gives other batches than the tf.data path.

Example:
    >>> ds = ArrayDataset(images, labels, PipelineOptions(batch_size=128,
    ...                                                   shuffle=True,
    ...                                                   seed=0))
    >>> x, y = ds[0]  # float32 (128, 28, 28, 1) in [0, 1], int32 (128,)
"""

from __future__ import annotations

import copy
import math

import keras
import numpy as np
from keras import ops

from .options import PipelineOptions

_SEED_MODULUS = 2 ** 64


class ArrayDataset(keras.utils.PyDataset):
    """Batches of in-memory uint8 images `(N, height, width[, channels])`
    and integer labels `(N,)` as `(x, y)`: x float32 `(batch, height,
    width, channels)` in `[0, 1]`, y int32 `(batch,)`.

    Shuffled (`options.shuffle`), every epoch visits each example once in
    a new order, a permutation drawn from `(options.seed, epoch)` (a fresh
    random seed when `options.seed` is None). Without `options.repeat` the
    dataset has `len(ds)` batches and `on_epoch_end` (called by `fit`)
    moves to the next epoch's order; with it, it is infinite (pass
    `steps_per_epoch` to `fit`) and batch `i` belongs to epoch
    `i // batches_per_epoch`.

    Attributes:
        element_spec: `(x, y)` as `keras.KerasTensor`s with the batch
            shapes and dtypes (the batch dimension None unless every batch
            is full), the attribute train.py reads of a `tf.data.Dataset`.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray,
                 options: PipelineOptions, *, image_size: int | None = None,
                 channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        images = np.asarray(images)
        self._images = images[..., None] if images.ndim == 3 else images
        self._labels = np.asarray(labels)
        if len(self._images) != len(self._labels):
            raise ValueError(f"{len(self._images)} images but "
                             f"{len(self._labels)} labels")
        self.options = options
        self.image_size = image_size
        self.channels = channels
        seed = options.seed
        if seed is None:
            seed = np.random.SeedSequence().entropy
        self._seed = int(seed) % _SEED_MODULUS
        self._epoch = 0
        self._offset = 0
        n = len(self._labels)
        size = options.batch_size
        self._per_epoch = n // size if options.drop_remainder \
            else math.ceil(n / size)
        self.element_spec = self._spec()

    def _spec(self):
        height, width, in_channels = self._images.shape[1:]
        if self.image_size is not None:
            height = width = self.image_size
        full = self.options.drop_remainder or (
            len(self._labels) % self.options.batch_size == 0)
        batch = self.options.batch_size if full else None
        return (keras.KerasTensor(
            (batch, height, width, self.channels or in_channels), "float32"),
            keras.KerasTensor((batch,), "int32"))

    @property
    def num_batches(self) -> int | None:
        """Batches per epoch; None (infinite) with `options.repeat`."""
        return None if self.options.repeat else self._per_epoch

    def __len__(self) -> int:
        if self.options.repeat:
            raise TypeError("a repeated ArrayDataset is infinite; use "
                            "batches_per_epoch")
        return self._per_epoch

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one pass over the examples."""
        return self._per_epoch

    def order(self, epoch: int) -> np.ndarray:
        """The example indices of `epoch` in the order they are batched."""
        n = len(self._labels)
        if not self.options.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self._seed, int(epoch)])
        return rng.permutation(n)

    def skip(self, count: int) -> "ArrayDataset":
        """A repeated dataset that starts `count` batches later (what
        `tf.data.Dataset.skip` does; train.py resumes mid-run with it).

        Raises:
            ValueError: a dataset without `options.repeat`, or `count < 0`.
        """
        if not self.options.repeat or count < 0:
            raise ValueError("skip needs a repeated dataset and count >= 0; "
                             f"got repeat={self.options.repeat}, "
                             f"count={count}")
        view = copy.copy(self)
        view.set_offset(self._offset + int(count))
        return view

    def set_offset(self, count: int) -> None:
        """Makes batch `i` the batch `i + count` of the repeated stream."""
        self._offset = int(count)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = int(index)
        if index >= 0:
            index += self._offset
        if index < 0 or self._per_epoch == 0 or (
                not self.options.repeat and index >= self._per_epoch):
            raise IndexError(f"batch {index} of a dataset of "
                             f"{self._per_epoch} batches per epoch")
        epoch, position = divmod(index, self._per_epoch)
        if not self.options.repeat:
            epoch = self._epoch
        size = self.options.batch_size
        rows = self.order(epoch)[position * size:(position + 1) * size]
        return self._preprocess(self._images[rows]), \
            self._labels[rows].astype(np.int32)

    def _preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 -> float32 `[0, 1]`, then `adapt_image`'s tiling and
        bilinear resize (clipped to `[0, 1]`)."""
        x = images.astype(np.float32) / np.float32(255.0)
        if self.channels == 3 and x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        size = self.image_size
        if size is not None and x.shape[1:3] != (size, size):
            x = ops.convert_to_numpy(ops.image.resize(
                x, (size, size), interpolation="bilinear"))
            x = np.clip(x, 0.0, 1.0)
        return x

    def on_epoch_end(self) -> None:
        """Moves a finite dataset to its next epoch's order."""
        self._epoch += 1

    def as_numpy_iterator(self):
        """The batches of one epoch (`tf.data.Dataset.as_numpy_iterator`'s
        name; an infinite dataset never ends)."""
        return iter(self)


__all__ = ["ArrayDataset"]
