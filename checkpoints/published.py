"""The table of published checkpoints the project can load.

Xie, Wu, van der Maaten, Yuille & He 2019, "Feature Denoising for Improving
Adversarial Robustness", CVPR, arXiv 1812.03411: the three ImageNet models
of their repository's model zoo (facebookresearch/ImageNet-Adversarial-
Training, INSTRUCTIONS.md, unchanged since 2019-02-07), tensorpack `.npz`
files under CC-BY-NC 4.0: download them from the original URL and convert
locally; converted weights are never committed or redistributed here.

Their zoo lists top-1 error / targeted success rate on the 50k ImageNet
validation images; accuracies here are 100 - error. The attack: targeted
L-inf PGD, one uniformly random wrong target per image, eps 16/255, step
1/255 (1.6/255 for 10 iterations), random start. The publisher gives no
SHA-256 (`sha256=None`): robust-recipes records the hash of its own first
download and checks every later use against it; a file placed in the cache
by hand is refused until the user checks it and passes its hash as
`--trust_sha256` (see `checkpoints.download.fetch`).
"""

from __future__ import annotations

from checkpoints.spec import CheckpointSpec, ThreatModel
from core.registry import Registry

CHECKPOINTS = Registry("checkpoint")

_IAT = ("https://github.com/facebookresearch/ImageNet-Adversarial-Training/"
        "releases/download")
_XIE2019 = ("Xie, Wu, van der Maaten, Yuille & He 2019, Feature Denoising "
            "for Improving Adversarial Robustness, CVPR, arXiv 1812.03411")
_XIE_ATTACK = ("targeted L-inf PGD, one random wrong target per image, eps "
               "16/255, step max(1/255, eps/steps), random start; 50k "
               "ImageNet val images (the paper's model zoo)")
_XIE_THREAT = ThreatModel(norm="inf", eps=16 / 255, targeted=True)
_TENSORPACK = ("BGR, NCHW, pixels x / 127.5 - 1 in [-1, 1]; 224 x 224 "
               "center crop of the shorter side resized to 256")
GAUSSIAN_AFTER_STAGE = {"kind": "gaussian", "embed": True,
                        "where": "after_stage"}
DOT_AFTER_BLOCK = {"kind": "dot_product", "embed": False,
                   "where": "after_block"}


def register(spec: CheckpointSpec) -> CheckpointSpec:
    """Adds `spec` to `CHECKPOINTS`.

    Raises:
        KeyError: a checkpoint of that name is already registered.
    """
    CHECKPOINTS.register(spec.name)(spec)
    return spec


def _xie(name, asset, recipe, model_kwargs, clean_err, errors, success):
    return register(CheckpointSpec(
        name=name, url=f"{_IAT}/{asset}", sha256=None, recipe=recipe,
        model_kwargs=model_kwargs, converter="tensorpack",
        dataset="imagenet2012", num_classes=1000, input_size=224,
        source_contract=_TENSORPACK, threat_model=_XIE_THREAT,
        clean_acc=round(100 - clean_err, 1),
        robust_acc={k: round(100 - v, 1) for k, v in errors.items()},
        attack_success=success, attack=_XIE_ATTACK, paper=_XIE2019,
        license="CC-BY-NC-4.0"))


_xie("resnet152.xie2019_in1k", "v0/R152.npz", "resnet152_baseline",
     {"name": "resnet152"}, 37.7, {10: 47.5, 100: 58.3, 1000: 61.0},
     {10: 5.5, 100: 31.0, 1000: 36.1})
_xie("denoise_resnet152.xie2019_in1k", "v0.1/R152-Denoise.npz",
     "denoise_resnet152",
     {"name": "resnet152", "denoise": GAUSSIAN_AFTER_STAGE}, 34.7,
     {10: 44.3, 100: 54.5, 1000: 57.2}, {10: 4.9, 100: 26.6, 1000: 32.7})
_xie("denoise_all_resnext101.xie2019_in1k", "v0.2/X101-DenoiseAll.npz",
     "denoise_all_resnext101",
     {"name": "resnext101_32x8d", "denoise": DOT_AFTER_BLOCK}, 31.6,
     {10: 44.0, 100: 55.6, 1000: 59.6}, {10: 4.9, 100: 31.5, 1000: 38.1})
