"""ResNet-152 with 4 feature-denoising blocks, adversarially trained on
ImageNet with the protocol of Xie et al. 2019 ("ResNet152 Denoise").

Xie, Wu, van der Maaten, Yuille, He 2019, "Feature Denoising for Improving
Adversarial Robustness", CVPR, arXiv 1812.03411; the released model
`R152-Denoise.npz` of facebookresearch/ImageNet-Adversarial-Training
(`--arch ResNetDenoise -d 152`). Model: ResNet-152 v1.5 (He et al. 2016,
arXiv 1512.03385) plus one residual denoising block (embedded Gaussian
non-local means, 1x1 conv, BN with gamma = 0; the paper's Sec. 4) after the
last residual block of each of res2-res5: 71,341,608 parameters.

Training protocol, shared by `resnet152_baseline` and
`denoise_all_resnext101` (`xie2019_config` below; the values are those of
the released code's main.py / adv_model.py / imagenet_utils.py):
- attack: targeted L-inf PGD towards a random wrong label (redrawn every
  step), eps 16/255, step 1/255, 30 steps, random start except that 20% of
  the steps start the batch from the clean image (one draw per step and
  replica); the attack runs with BN in inference mode;
- loss: 100% adversarial (alpha = 0), BN in train mode on the adversarial
  batch, softmax cross-entropy with label smoothing 0.1;
- SGD, Nesterov momentum 0.9, global batch 4096 = 32 per GPU x 128 GPUs, LR
  0.1 * batch / 256 (1.6), linear warmup from 0.1 over 5 epochs, x0.1 after
  epochs 35, 70 and 95, 110 epochs;
- weight decay 1e-4 as an L2 penalty (TF1 `l2_regularizer(1e-4)`, i.e.
  1e-4 / 2 * ||w||^2 in the loss, whose gradient momentum accumulates) on
  every conv / FC kernel, not on BN gamma / beta or biases: optimizer
  `weight_decay_mode="l2"` (Keras's own `weight_decay` is decoupled,
  outside the momentum, and so ~10x weaker at momentum 0.9);
- input: pixels in [0, 1], normalized in the model by mean = std = 0.5,
  i.e. the reference's [-1, 1] scaling.

Command (the paper's 128 GPUs: 16 workers x 8 GPUs, TF_CONFIG set on each):
    python train.py --recipe=denoise_resnet152 --workdir=/runs/r152dn \\
        --strategy=multi_worker --recipe.data.data_dir=/data/imagenet
Fewer GPUs keep the per-GPU batch of 32 (BN statistics are per replica, as
in the reference) by setting the global batch to 32 x replicas; the LR
follows the batch (0.1 per 256) unless it is overridden itself, e.g. one
8-GPU machine:
    python train.py --recipe=denoise_resnet152 --workdir=/runs/r152dn \\
        --strategy=mirrored --recipe.data.global_batch_size=256 \\
        --recipe.data.data_dir=/data/imagenet
Smoke (CPU, seconds; see below):
    python train.py --recipe=denoise_resnet152:smoke --workdir=/tmp/s
Evaluate (targeted PGD with a random wrong target, eps 16/255; 10 steps of
1.6/255 by default, then e.g. 100 steps of 1/255):
    python evaluate.py --workdir=/runs/r152dn
    python evaluate.py --workdir=/runs/r152dn --steps=100 \\
        --step_size=0.00392157

Data: tfds `imagenet2012`. tfds cannot download ImageNet: put
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (image-net.org,
registration needed) into the directory given as
`--recipe.data.data_dir=...` (or `$IMAGENET_MANUAL_DIR`); the first run
prepares the TFRecords there (hours, ~150 GB). Training uses random-resized
crops (area 8-100%, aspect 3/4-4/3) to 224 plus flips; evaluation resizes
the shorter side to 256 and center-crops 224.

Hardware and time: the reference trained this model in ~90 h on 128 V100s
(~11,500 GPU-hours; the baseline ResNet-152 in ~52 h). This repo has NOT
run the full recipe (no GPUs, no ImageNet here) and reports no numbers of
its own. Expected, from the released model (ImageNet val, 50k images,
targeted PGD, eps 16/255, top-1 accuracy / attack success rate): clean
65.3%; 10 steps 55.7% / 4.9%; 100 steps 45.5% / 26.6%; 1000 steps 42.8% /
32.7% (README model zoo; run-to-run +-0.3).

Known differences from the reference: no colour jitter / PCA lighting in
the augmentation, bilinear instead of bicubic resizing, RGB instead of BGR
input (irrelevant when training from scratch); PGD returns its best iterate
per example (this repo's attack contract) rather than the last one, and
clips its random start into [0, 1] before the first step; Keras SGD's
momentum holds lr-scaled velocity (identical to TF1's at constant LR, a
small difference across the LR changes); steps per epoch are
floor(1,281,167 / batch) = 312 rather than 313; the LR drops one step after
the epoch boundary (Keras's PiecewiseConstantDecay convention).

Smoke: the same block structure (bottleneck ResNet, a Gaussian denoise
block after each stage) at depth (1, 2, 1, 1) and width 8 on 64 real
Fashion-MNIST images tiled to 3 channels at 64 x 64, batch 4, 2 training
steps of 2-step PGD (the full depth takes ~1 min per smoke run to trace).

Published weights: checkpoint `denoise_resnet152.xie2019_in1k` (checkpoints/published.py;
`python evaluate.py --checkpoint=denoise_resnet152.xie2019_in1k` evaluates it,
`train.py --init_checkpoint=denoise_resnet152.xie2019_in1k` fine-tunes from it).
"""

import ml_collections

from recipes import common

EPS = 16 / 255  # L-inf; 16 on the 0-255 scale
TRAIN_STEP_SIZE = 1 / 255  # 1 on the 0-255 scale
TRAIN_STEPS = 30
# Evaluation: alpha = max(1, eps_255 / steps) / 255, i.e. 1.6/255 at 10 steps.
EVAL_STEPS = 10
EVAL_STEP_SIZE = max(1.0, 16 / EVAL_STEPS) / 255
GPUS, BATCH_PER_GPU = 128, 32
EPOCHS = 110
WARMUP_EPOCHS = 5
BOUNDARIES_EPOCHS = (35, 70, 95)
DENOISE = {"kind": "gaussian", "embed": True, "where": "after_stage"}
# Smoke depth: the full (3, 8, 36, 3) traces for ~1 min per smoke run on a
# 2-core CPU; 2 blocks in res3 keep "after_stage" and "after_block" apart.
SMOKE_BLOCKS = (1, 2, 1, 1)


def xie2019_config(args: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
    """The ImageNet adversarial-training protocol of Xie et al. 2019 (module
    docstring), without the model; `args` from `common.parse_arg`. With
    `args.smoke` it shrinks data, steps and attacks (the caller shrinks the
    model): 64 Fashion-MNIST images at 64 x 64 x 3, batch 4, 2 steps."""
    c = common.base_config()
    # The global batch is a reference: overriding it on the command line
    # rescales the LR (0.1 per 256 images) unless the LR is overridden too.
    batch = ml_collections.FieldReference(GPUS * BATCH_PER_GPU)
    c.data.name = "imagenet2012"
    c.data.global_batch_size = batch
    c.data.image_size = 224
    c.data.augment = True
    # data_dir: tfds root and the directory holding the ILSVRC2012 tars;
    # set it with --recipe.data.data_dir=/path (None: $IMAGENET_MANUAL_DIR
    # or ~/tensorflow_datasets/downloads/manual).
    c.model.kwargs = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    c.attack = common.pgd(eps=EPS, step_size=TRAIN_STEP_SIZE,
                          steps=TRAIN_STEPS, targeted=True, rand_init=True)
    c.attack.target = "random"  # a uniformly random wrong label, per step
    c.attack.prob_start_from_clean = 0.2
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = batch.to_float() * 0.1 / 256
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-4
    c.optimizer.weight_decay_mode = "l2"  # TF1 l2_regularizer, see above
    c.schedule.name = "piecewise"
    c.schedule.warmup_epochs = WARMUP_EPOCHS
    c.schedule.warmup_start_lr = 0.1
    c.schedule.boundaries_epochs = BOUNDARIES_EPOCHS
    c.schedule.decay_factor = 0.1
    c.train.epochs = EPOCHS
    c.train.alpha = 0.0  # 100% adversarial loss
    c.train.label_smoothing = 0.1
    c.eval.batch_size = 256  # evaluate.py's global batch: 32 x 8 GPUs
    c.eval.attack = common.pgd(eps=EPS, step_size=EVAL_STEP_SIZE,
                               steps=EVAL_STEPS, targeted=True,
                               rand_init=True)
    if args.smoke:
        common.fmnist_smoke(c)
        c.data.global_batch_size = 4
        c.data.num_train_examples = 64
        c.data.num_eval_examples = 8
        c.data.image_size = 64  # res5 at 2 x 2, so non-local means act
        c.data.channels = 3
        c.data.augment = False
        c.train.steps_per_epoch = 2
        c.eval.batch_size = 4
        c.eval.num_examples = 8
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = xie2019_config(args)
    c.model.name = "resnet152"
    c.model.kwargs.denoise = dict(DENOISE)
    if args.smoke:
        c.model.kwargs.width = 8
        c.model.kwargs.blocks = SMOKE_BLOCKS
    return c
