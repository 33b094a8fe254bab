"""Static facts about the supported datasets: classes, shapes, statistics.

The per-channel `mean` / `std` are those of the train split with pixels in
`[0, 1]`; models normalize inside themselves (Madry et al. 2018 style), so the
input pipeline always yields `[0, 1]` images and these numbers are for the
model's normalization layer.

References:
    Xiao et al. 2017, "Fashion-MNIST", arXiv 1708.07747.
    LeCun et al. 1998, "Gradient-based learning applied to document
        recognition" (MNIST).
    Krizhevsky 2009, "Learning multiple layers of features from tiny images"
        (CIFAR-10 / CIFAR-100).
    Russakovsky et al. 2015, "ImageNet Large Scale Visual Recognition
        Challenge", arXiv 1409.0575 (ImageNet-1k / ILSVRC2012).
"""

import dataclasses


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk and cannot be downloaded or prepared now.

    The message says how to get or prepare the data.
    """


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Facts about one dataset.

    Attributes:
        name: registry name, e.g. `"fashion_mnist"`.
        num_classes: number of labels; labels are int32 in
            `[0, num_classes)`.
        image_shape: `(height, width, channels)` of the raw images. ImageNet
            images vary in size; for it this is the default model input
            `(224, 224, 3)` produced by the preprocessing.
        mean: per-channel mean of the train split, pixels in `[0, 1]`.
        std: per-channel standard deviation of the train split, `[0, 1]`
            units.
        num_train: examples in the `"train"` split.
        num_test: examples in the evaluation split (`splits[-1]`).
        splits: accepted split names; the last one is the evaluation split.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_train: int
    num_test: int
    splits: tuple[str, ...] = ("train", "test")

    @property
    def eval_split(self) -> str:
        """The held-out split used for evaluation (`"test"` or
        `"validation"`)."""
        return self.splits[-1]


_INFOS = {
    info.name: info
    for info in (
        DatasetInfo(
            name="cifar10",
            num_classes=10,
            image_shape=(32, 32, 3),
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            num_train=50_000,
            num_test=10_000,
        ),
        DatasetInfo(
            name="cifar100",
            num_classes=100,
            image_shape=(32, 32, 3),
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            num_train=50_000,
            num_test=10_000,
        ),
        DatasetInfo(
            name="fashion_mnist",
            num_classes=10,
            image_shape=(28, 28, 1),
            mean=(0.2860,),
            std=(0.3530,),
            num_train=60_000,
            num_test=10_000,
        ),
        DatasetInfo(
            name="imagenet2012",
            num_classes=1000,
            image_shape=(224, 224, 3),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_train=1_281_167,
            num_test=50_000,
            splits=("train", "validation"),
        ),
        DatasetInfo(
            name="mnist",
            num_classes=10,
            image_shape=(28, 28, 1),
            mean=(0.1307,),
            std=(0.3081,),
            num_train=60_000,
            num_test=10_000,
        ),
    )
}

# Accepted spellings that map onto a canonical split, per dataset.
_SPLIT_ALIASES = {"imagenet2012": {"test": "validation"}}


def list_datasets() -> list[str]:
    """Returns the sorted names accepted by `get_dataset` and `get_info`."""
    return sorted(_INFOS)


def get_info(name: str) -> DatasetInfo:
    """Returns the `DatasetInfo` of dataset `name`.

    Args:
        name: one of `list_datasets()`.

    Returns:
        A frozen `DatasetInfo`.

    Raises:
        ValueError: if `name` is not a known dataset.
    """
    if name not in _INFOS:
        raise ValueError(
            f"unknown dataset {name!r}; available: {list_datasets()}"
        )
    return _INFOS[name]


def canonical_split(name: str, split: str) -> str:
    """Validates `split` for dataset `name` and resolves aliases.

    ImageNet has no public labelled test set, so for `"imagenet2012"` the
    split `"test"` is an alias for `"validation"` (the 50k ILSVRC2012
    validation images, the usual evaluation set).

    Args:
        name: one of `list_datasets()`.
        split: a split name, e.g. `"train"` or `"test"`.

    Returns:
        The canonical split name, one of `get_info(name).splits`.

    Raises:
        ValueError: if `name` or `split` is unknown.
    """
    info = get_info(name)
    aliases = _SPLIT_ALIASES.get(name, {})
    if split in info.splits:
        return split
    if split in aliases:
        return aliases[split]
    accepted = tuple(info.splits) + tuple(aliases)
    notes = "".join(f"; {a!r} is an alias of {t!r}" for a, t in aliases.items())
    raise ValueError(
        f"unknown split {split!r} for dataset {name!r}; accepted: "
        f"{accepted}{notes}"
    )
