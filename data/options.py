"""How an input pipeline batches and orders its examples, and the argument
checks shared by every pipeline; free of TensorFlow, so that the numpy
input path (`data.numpy_pipeline`) and the tf.data one (`data._pipeline`)
share them."""

import dataclasses
import numbers


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """How `finish` batches and orders a per-example dataset.

    Attributes:
        batch_size: global batch size (all replicas together).
        shuffle: shuffle examples, reshuffling every epoch.
        shuffle_buffer: buffer size; the split size for in-memory data.
        seed: seed for shuffling and augmentation; `None` = nondeterministic.
        repeat: repeat forever (then `fit` needs `steps_per_epoch`).
        drop_remainder: drop a last incomplete batch.
        cache: cache the raw examples in memory after the first epoch.
        shard_by_data: tell tf.distribute to shard by element, not by file
            (in-memory datasets have no files).
    """

    batch_size: int
    shuffle: bool = False
    shuffle_buffer: int = 1
    seed: int | None = None
    repeat: bool = False
    drop_remainder: bool = False
    cache: bool = False
    shard_by_data: bool = False


def is_int(value: object) -> bool:
    """True for Python and NumPy integers, False for bools and floats."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate_positive_int(name: str, value: object, allow_none: bool) -> None:
    """Raises `ValueError` unless `value` is a positive int (or allowed
    `None`)."""
    if value is None and allow_none:
        return
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
