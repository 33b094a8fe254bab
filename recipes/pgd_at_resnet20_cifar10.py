"""PGD adversarial training of a CIFAR ResNet-20 on CIFAR-10 at eps = 8/255
with the Madry et al. CIFAR-10 settings.

Madry et al. 2018 (arXiv 1706.06083, Sec. 5 and the cifar10_challenge
config): L-inf eps = 8/255, 7 PGD steps of 2/255 from a random start for
training (their challenge model used 10 steps), SGD momentum 0.9, weight
decay 2e-4, batch 128, LR 0.1 divided by 10 at 40k and 60k of 80k steps
(~102 and ~154 of 205 epochs), random crop + flip. We train the smaller
ResNet-20 (He et al. 2016, arXiv 1512.03385, Sec. 4.2) instead of their
WRN-34-10; evaluation is PGD-20 of step 2/255.

Command:  python train.py --recipe=pgd_at_resnet20_cifar10 --workdir=/tmp/c10
Smoke:    python train.py --workdir=/tmp/s
              --recipe=pgd_at_resnet20_cifar10:smoke
Hardware: the full recipe needs CIFAR-10 from tensorflow-datasets (network)
and a GPU (on a 2-core CPU ResNet-20 PGD-7 steps run at ~200 img/s, i.e.
~4 min per epoch, ~14 h in all). It has NOT been run here: this machine has
no CIFAR-10 (no network) and no GPU, so it reports no numbers yet. Anchor:
Madry et al.'s adversarially trained wide ResNet scores 87.14% clean, 47.04%
under 20-step PGD and 44.04% under AutoAttack (cifar10_challenge leaderboard
and the AutoAttack README); a ResNet-20 is expected lower.
The smoke variant trains on real Fashion-MNIST tiled to 3 channels.
"""

import ml_collections

from recipes import common

EPS = 8 / 255  # L-inf, 8 on the 0-255 scale
EPOCHS = 205
STEPS_PER_EPOCH = 50000 // 128


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.base_config()
    c.model.name = "resnet20"
    c.data.name = "cifar10"
    c.data.global_batch_size = 128
    c.data.augment = True  # 4-px pad + random 32x32 crop, horizontal flip
    c.attack = common.pgd(eps=EPS, step_size=2 / 255, steps=7)
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1 * c.data.global_batch_size / 128
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 2e-4
    c.schedule.name = "piecewise"
    # Madry's 40k / 60k steps of batch 128, in epochs.
    c.schedule.boundaries_epochs = (40000 // STEPS_PER_EPOCH,
                                    60000 // STEPS_PER_EPOCH)
    c.train.epochs = EPOCHS
    c.eval.attack = common.pgd(eps=EPS, step_size=2 / 255, steps=20)
    if args.smoke:
        c.model.kwargs = {"width": 8, "blocks": (1, 1, 1)}
        common.fmnist_smoke(c)
        c.data.image_size = 32
        c.data.channels = 3
    return c
