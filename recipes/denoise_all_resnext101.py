"""ResNeXt-101 32x8d with a feature-denoising block after every residual
block, adversarially trained on ImageNet with the protocol of Xie et al.
2019 ("ResNeXt101 DenoiseAll", their CAAD 2018 winning entry).

Xie, Wu, van der Maaten, Yuille, He 2019, "Feature Denoising for Improving
Adversarial Robustness", CVPR, arXiv 1812.03411; the released model
`X101-DenoiseAll.npz` of facebookresearch/ImageNet-Adversarial-Training
(`--arch ResNeXtDenoiseAll -d 101`). Model: ResNeXt-101 32x8d (Xie et al.
2017, arXiv 1611.05431) with a residual denoising block (the parameter-free
dot-product non-local op without embeddings, 1x1 conv, BN with gamma = 0;
the paper's Sec. 4) after each of its 33 bottleneck blocks: 126,801,704
parameters. The training protocol (targeted PGD-30 at eps 16/255 towards
random wrong labels with 20% clean starts, 100% adversarial loss, Nesterov
SGD, LR 0.1 per 256 images with 5 warmup epochs, x0.1 after epochs 35/70/95
of 110, L2 1e-4 on kernels, label smoothing 0.1) is the one of
`recipes/denoise_resnet152.py`, which documents it. The README says this
model was trained with "slightly different" settings that it does not
list; this recipe uses the published protocol.

Command (the paper's 128 GPUs: 16 workers x 8 GPUs, TF_CONFIG set on each):
    python train.py --recipe=denoise_all_resnext101 --workdir=/runs/x101 \\
        --strategy=multi_worker --recipe.data.data_dir=/data/imagenet
One 8-GPU machine (32 images per GPU; the LR follows the batch):
    python train.py --recipe=denoise_all_resnext101 --workdir=/runs/x101 \\
        --strategy=mirrored --recipe.data.global_batch_size=256 \\
        --recipe.data.data_dir=/data/imagenet
Smoke (CPU, seconds):
    python train.py --recipe=denoise_all_resnext101:smoke --workdir=/tmp/s
Evaluate: python evaluate.py --workdir=/runs/x101 (targeted PGD-10, eps
16/255, step 1.6/255, a random wrong target per image).

Data: tfds `imagenet2012` from the ILSVRC2012 tars placed in
`--recipe.data.data_dir=...` (see `recipes/denoise_resnet152.py`).

Hardware and time: the reference gives no training time for this model
(ResNet-152 took 52 h, with 4 Gaussian blocks 90 h, on 128 V100s). NOT run
here (no GPUs, no ImageNet); no numbers of our own. Expected, from the
released model (ImageNet val, targeted PGD, eps 16/255, top-1 accuracy /
attack success rate): clean 68.4%; 10 steps 56.0% / 4.9%; 100 steps 44.4% /
31.5%; 1000 steps 40.4% / 38.1% (README model zoo). CAAD 2018: 50.6%
against 48 unknown black-box attackers.

Smoke: the same block structure (grouped 3x3 convs with 32 groups, a
denoise block after every bottleneck) at depth (1, 2, 1, 1) and width 8 on
64 real Fashion-MNIST images tiled to 3 channels at 64 x 64, batch 4, 2
training steps of 2-step PGD.

Published weights: checkpoint `denoise_all_resnext101.xie2019_in1k` (checkpoints/published.py;
`python evaluate.py --checkpoint=denoise_all_resnext101.xie2019_in1k` evaluates it,
`train.py --init_checkpoint=denoise_all_resnext101.xie2019_in1k` fine-tunes from it).
"""

import ml_collections

from recipes import common
from recipes import denoise_resnet152

DENOISE = {"kind": "dot_product", "embed": False, "where": "after_block"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = denoise_resnet152.xie2019_config(args)
    c.model.name = "resnext101_32x8d"  # groups 32, width_per_group 8
    c.model.kwargs.denoise = dict(DENOISE)
    if args.smoke:
        c.model.kwargs.width = 8
        c.model.kwargs.blocks = denoise_resnet152.SMOKE_BLOCKS
    return c
