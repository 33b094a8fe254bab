"""`CheckpointSpec`: everything the registry knows about one published
checkpoint (timm's `PretrainedCfg` idea, RobustBench's threat-model fields).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

CONVERTERS = ("tensorpack", "keras")
NORMS = ("inf", "2")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")


@dataclasses.dataclass(frozen=True)
class ThreatModel:
    """The threat model the published robust accuracy was measured under.

    Attributes:
        norm: "inf" or "2".
        eps: budget on the [0, 1] pixel scale (16/255 = 0.0627 for Xie et
            al. 2019).
        targeted: True when the attack aims at a (random) wrong label.
    """

    norm: str
    eps: float
    targeted: bool

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got "
                             f"{self.norm!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1] (pixel scale [0, 1]); "
                             f"got {self.eps!r}")


@dataclasses.dataclass(frozen=True)
class CheckpointSpec:
    """One published checkpoint.

    Attributes:
        name: `arch.tag` (timm style), e.g. "denoise_resnet152.xie2019_in1k".
        url: where `keras.utils.get_file` downloads the file from.
        sha256: all 64 hex digits of the file's SHA-256, or None when the
            publisher gives none: then the hash of the first download is
            recorded in the cache and every later use is checked against it.
        recipe: the `recipes/` module that trains this architecture.
        model_kwargs: `models.create_model` name and kwargs of the converted
            Keras model (without `num_classes` / `input_shape`).
        converter: how the file becomes a Keras model, one of `CONVERTERS`.
        dataset: the data name of `data.get_dataset` it was trained on.
        num_classes: logits of the published head.
        input_size: height = width of the published evaluation input.
        source_contract: the input the ORIGINAL file expects (channel order,
            layout, pixel range); the converted model always takes RGB
            `(batch, H, W, 3)` float32 in [0, 1].
        threat_model: norm / eps / targeted of `robust_acc`.
        clean_acc: published top-1 clean accuracy in %.
        robust_acc: published accuracy in % under `attack`, keyed by the
            attack's iteration count.
        attack_success: published targeted success rate in %, same keys.
        attack: the attack behind `robust_acc`, in words.
        paper: authors, year, title, arXiv id.
        license: the license of the weights.
    """

    name: str
    url: str
    sha256: str | None
    recipe: str
    model_kwargs: Mapping[str, Any]
    converter: str
    dataset: str
    num_classes: int
    input_size: int
    source_contract: str
    threat_model: ThreatModel
    clean_acc: float
    robust_acc: Mapping[int, float]
    attack_success: Mapping[int, float]
    attack: str
    paper: str
    license: str

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"checkpoint name must be 'arch.tag' in "
                             f"lowercase snake_case; got {self.name!r}")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex "
                             f"digits or None; got {self.sha256!r}")
        if self.converter not in CONVERTERS:
            raise ValueError(f"{self.name}: converter must be one of "
                             f"{CONVERTERS}; got {self.converter!r}")
        if not self.url.startswith(("https://", "file://")):
            raise ValueError(f"{self.name}: url must be https:// (or "
                             f"file:// in tests); got {self.url!r}")

    @property
    def filename(self) -> str:
        """The cached file's name: the last part of the URL."""
        return self.url.rsplit("/", 1)[-1]
