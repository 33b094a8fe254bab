"""ResNet-152 without denoising blocks, adversarially trained on ImageNet
with the protocol of Xie et al. 2019 ("ResNet152 Baseline").

Xie, Wu, van der Maaten, Yuille, He 2019, "Feature Denoising for Improving
Adversarial Robustness", CVPR, arXiv 1812.03411: the adversarially trained
baseline that the denoising networks are compared with; the released model
`R152.npz` of facebookresearch/ImageNet-Adversarial-Training (`--arch
ResNet -d 152`). Model: ResNet-152 v1.5 (He et al. 2016, arXiv 1512.03385),
60,192,808 parameters. The training protocol (targeted PGD-30 at eps 16/255
towards random wrong labels with 20% clean starts, 100% adversarial loss,
Nesterov SGD, LR 0.1 per 256 images with 5 warmup epochs, x0.1 after epochs
35/70/95 of 110, L2 1e-4 on kernels, label smoothing 0.1) is the one of
`recipes/denoise_resnet152.py`, which documents it.

Command (the paper's 128 GPUs: 16 workers x 8 GPUs, TF_CONFIG set on each):
    python train.py --recipe=resnet152_baseline --workdir=/runs/r152 \\
        --strategy=multi_worker --recipe.data.data_dir=/data/imagenet
One 8-GPU machine (32 images per GPU; the LR follows the batch):
    python train.py --recipe=resnet152_baseline --workdir=/runs/r152 \\
        --strategy=mirrored --recipe.data.global_batch_size=256 \\
        --recipe.data.data_dir=/data/imagenet
Smoke (CPU, seconds):
    python train.py --recipe=resnet152_baseline:smoke --workdir=/tmp/s
Evaluate: python evaluate.py --workdir=/runs/r152 (targeted PGD-10, eps
16/255, step 1.6/255, a random wrong target per image).

Data: tfds `imagenet2012` from the ILSVRC2012 tars placed in
`--recipe.data.data_dir=...` (see `recipes/denoise_resnet152.py`).

Hardware and time: ~52 h on 128 V100s in the reference (~6,700
GPU-hours). NOT run here (no GPUs, no ImageNet); no numbers of our own.
Expected, from the released model (ImageNet val, targeted PGD, eps 16/255,
top-1 accuracy / attack success rate): clean 62.3%; 10 steps 52.5% / 5.5%;
100 steps 41.7% / 31.0%; 1000 steps 39.0% / 36.1% (README model zoo).

Smoke: bottleneck ResNet at depth (1, 2, 1, 1) and width 8 on 64 real
Fashion-MNIST images tiled to 3 channels at 64 x 64, batch 4, 2 training
steps of 2-step PGD (the full depth takes ~1 min per smoke run to trace).

Published weights: checkpoint `resnet152.xie2019_in1k` (checkpoints/published.py;
`python evaluate.py --checkpoint=resnet152.xie2019_in1k` evaluates it,
`train.py --init_checkpoint=resnet152.xie2019_in1k` fine-tunes from it).
"""

import ml_collections

from recipes import common
from recipes import denoise_resnet152


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = denoise_resnet152.xie2019_config(args)
    c.model.name = "resnet152"
    if args.smoke:
        c.model.kwargs.width = 8
        c.model.kwargs.blocks = denoise_resnet152.SMOKE_BLOCKS
    return c
