"""Hook points that plug the defense layers of `layers/` into the builders.

They generalise the feature-denoising reference code's `group_func` /
`block_func` plug-ins (Xie et al. 2019, arXiv 1812.03411):

- `input_defenses`: layers applied to the `[0, 1]` input before the
  normalization layer (thermometer encoding, bit-depth reduction, median
  smoothing, random resize-pad). Given as layer instances or Keras layer
  configs `{"class_name": "ThermometerEncoding", "config": {"levels": 16}}`.
- `denoise`: `{"kind": ..., "embed": ..., "where": "after_stage" |
  "after_block"}`. "after_stage" puts one `NonLocalDenoise` after the last
  residual block of each stage (the paper's "+4 denoise", named
  `stage{k}_denoise`); "after_block" puts one after every residual block
  ("DenoiseAll", named `stage{k}_block{i}_denoise`), so a checkpoint
  converter can map names one to one.
- `sap`: `{"stages": (2, 3), "ratio": 1.0}`: `StochasticActivationPruning`
  after the named stages (Dhillon et al. 2018, arXiv 1803.01442).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

import layers

WHERE = ("after_stage", "after_block")
_DENOISE_KEYS = ("kind", "embed", "where")
_SAP_KEYS = ("stages", "ratio", "seed")


def input_defense_layers(specs: Sequence[Any] | None) -> list[keras.Layer]:
    """Layer instances for `specs` (instances or Keras layer configs).

    Raises:
        ValueError: a spec that is neither a layer nor a config dict naming
            a registered layer (the message lists the defense layers).
    """
    out = []
    for spec in specs or ():
        if isinstance(spec, keras.layers.Layer):
            out.append(spec)
            continue
        spec = dict(spec)
        name = spec.get("class_name")
        if name not in layers.__all__:
            raise ValueError(f"input defense class_name must be one of "
                             f"{layers.__all__}; got {name!r}")
        out.append(getattr(layers, name)(**dict(spec.get("config", {}))))
    return out


def check_denoise(denoise: Mapping[str, Any] | None) -> dict | None:
    """Validated copy of a `denoise` hook spec, or None.

    Raises:
        ValueError: unknown keys, `where` not in `WHERE`, or a `kind` not in
            `layers.nonlocal_denoise.KINDS`.
    """
    if not denoise:
        return None
    denoise = {"embed": True, "where": "after_stage", **dict(denoise)}
    unknown = sorted(set(denoise) - set(_DENOISE_KEYS))
    if unknown:
        raise ValueError(f"denoise got unknown keys {unknown}; accepted: "
                         f"{_DENOISE_KEYS}")
    if denoise["where"] not in WHERE:
        raise ValueError(f"denoise where must be one of {WHERE}; got "
                         f"{denoise['where']!r}")
    from layers.nonlocal_denoise import KINDS

    if denoise.get("kind") not in KINDS:
        raise ValueError(f"denoise kind must be one of {KINDS}; got "
                         f"{denoise.get('kind')!r}")
    return denoise


def check_sap(sap: Mapping[str, Any] | None, stages: Sequence[int]
              ) -> dict | None:
    """Validated copy of a `sap` hook spec, or None.

    Raises:
        ValueError: unknown keys, or a stage the model does not have.
    """
    if not sap:
        return None
    sap = {"ratio": 1.0, "seed": None, **dict(sap)}
    unknown = sorted(set(sap) - set(_SAP_KEYS))
    if unknown:
        raise ValueError(f"sap got unknown keys {unknown}; accepted: "
                         f"{_SAP_KEYS}")
    bad = [s for s in sap.get("stages", ()) if s not in stages]
    if bad or not sap.get("stages"):
        raise ValueError(f"sap stages must be a non-empty subset of "
                         f"{tuple(stages)}; got {sap.get('stages')!r}")
    return sap


def denoise_after(x, denoise: dict | None, where: str, name: str):
    """Applies a `NonLocalDenoise` named `{name}_denoise` when the hook asks
    for one at this point (`where`), else returns `x`."""
    if denoise is None or denoise["where"] != where:
        return x
    from layers.nonlocal_denoise import NonLocalDenoise

    return NonLocalDenoise(kind=denoise["kind"], embed=denoise["embed"],
                           name=f"{name}_denoise")(x)


def sap_after(x, sap: dict | None, stage: int):
    """Applies SAP named `stage{stage}_sap` if the hook names this stage."""
    if sap is None or stage not in sap["stages"]:
        return x
    return layers.StochasticActivationPruning(
        ratio=sap["ratio"], seed=sap["seed"], name=f"stage{stage}_sap")(x)
