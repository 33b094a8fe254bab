"""Feature denoising (Xie et al. 2019) at CPU scale: a CIFAR ResNet-20 with
a Gaussian non-local denoising block after each of its 3 stages, PGD
adversarially trained on Fashion-MNIST at eps = 0.1.

Xie, Wu, van der Maaten, Yuille, He 2019, "Feature Denoising for Improving
Adversarial Robustness", CVPR, arXiv 1812.03411: the residual denoising
block of Sec. 4 (embedded Gaussian non-local means, 1x1 conv, BN with
gamma = 0, residual add), inserted after each stage as in their "+4
denoise" ResNet-152 (here 3 stages). It is the small sibling of the
ImageNet recipe: the same block and adversarial training (untargeted PGD
here; the ImageNet protocol is targeted, eps 16/255, 30 steps), a network
and data that fit a CPU. He et al. 2016 (arXiv 1512.03385, Sec. 4.2) for
ResNet-20.

Command:  python train.py --recipe=denoise_resnet20_fmnist --workdir=/tmp/dn
Smoke:    python train.py --workdir=/tmp/s
              --recipe=denoise_resnet20_fmnist:smoke
Hardware: 2-core CPU, no GPU. The Gaussian block after stage 1 works on
28 x 28 = 784 positions (a 784 x 784 affinity per image), so a PGD-5 step
of batch 128 takes ~3 s here, ~25 min per Fashion-MNIST epoch: the recipe
trains 3 epochs (cosine LR, 1 warmup epoch), where a 10-epoch run would
take over 4 h. Reached here (results/denoise_resnet20_fmnist/, README
model zoo): clean 83.71%, FGSM 76.27%, PGD-20 (eps 0.1, step 0.01)
74.32% on the 10k test images; fit 94 min on the shared 2-core CPU. The
PGD-20 sanity check found Square-1000 lower on its first 200 images
(75.5% vs 77.0%); on the first 500 images Square-1000 leaves 75.40%.
"""

import ml_collections

from recipes import common

EPS = 0.1  # L-inf, on the [0, 1] pixel scale (25.5 / 255)
TRAIN_STEPS = 5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.base_config()
    c.model.name = "resnet20"
    c.model.kwargs = {"denoise": {"kind": "gaussian", "embed": True,
                                  "where": "after_stage"}}
    c.data.name = "fashion_mnist"
    c.data.global_batch_size = 128
    c.attack = common.pgd(eps=EPS, step_size=2.5 * EPS / TRAIN_STEPS,
                          steps=TRAIN_STEPS)
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1 * c.data.global_batch_size / 256
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-4
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 1
    c.train.epochs = 3
    c.eval.attack = common.pgd(eps=EPS, step_size=0.01, steps=20)
    if args.smoke:
        c.model.kwargs.width = 8
        c.model.kwargs.blocks = (1, 1, 1)
        common.fmnist_smoke(c)
    return c
