""""Free" adversarial training (Shafahi et al. 2019) of WRN-32-10 on CIFAR-10
at eps = 8/255 with m = 8: the paper's CIFAR-10 setting.

Shafahi, Najibi, Ghiasi, Xu, Dickerson, Studer, Davis, Taylor, Goldstein
2019, "Adversarial Training for Free!", arXiv 1904.12843, Algorithm 1 and
Table 1 (the "Free m = 8" row), with the defaults of the authors' TF code
(github.com/ashafahi/free_adv_train, config.py / free_train.py): batch 128,
80,000 optimizer steps counted in replays (80,000 * 128 / 50,000 = 205
epochs of gradient passes, i.e. 205 / 8 = 25.6 epochs of data), momentum
0.9, L2 weight decay 2e-4 added to the loss (coupled, as TF1 l2_loss),
LR 0.1 -> 0.01 -> 0.001 at replay steps 40,000 and 60,000, eps 8/255 with
FGSM steps of eps on delta, random crop + flip. Here the schedule is
written in minibatches (the trainer reads it at `step // m`): boundaries
at 5,000 and 7,500 of 10,000 minibatches, 26 epochs. Their network is
Madry et al.'s CIFAR wide ResNet (5 residual units per stage, widths 160 /
320 / 640), which the Free paper calls WRN-32-10 and TRADES WRN-34-10; the
registry's `wrn34_10` is that layout (Zagoruyko & Komodakis pre-activation
blocks, arXiv 1605.07146). Evaluation: PGD-20 of step 2/255, random start
(their multi_restart_pgd_attack.py defaults).

Command:  python train.py --recipe=free_at_wrn32_cifar10 --workdir=/tmp/f10
Smoke:    python train.py --recipe=free_at_wrn32_cifar10:smoke --workdir=/tmp/s
Hardware: needs CIFAR-10 from tensorflow-datasets (network) and a GPU; NOT
run here (no CIFAR-10, no GPU on this 2-core CPU machine), so numbers: see
results/free_at_wrn32_cifar10/ and the README model zoo once run. Anchor,
the authors' README: Free-8 85.96% clean, 46.19% PGD-100, 46.33% PGD-20 x
10 restarts, 785 min of training against 5,418 min for Madry's PGD-7.
The smoke variant trains on real Fashion-MNIST tiled to 3 channels.
"""

import math

import ml_collections

from recipes import common

EPS = 8 / 255  # L-inf, 8 on the 0-255 scale
REPLAYS = 8  # the paper's m
BATCH = 128
STEPS_PER_EPOCH = 50000 // BATCH
REPLAY_STEPS = 80000  # free_train.py: optimizer steps, m per minibatch


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.base_config()
    c.model.name = "wrn34_10"  # = the Free paper's WRN-32-10 (see above)
    c.data.name = "cifar10"
    c.data.global_batch_size = BATCH
    c.data.augment = True  # 4-px pad + random 32x32 crop, horizontal flip
    c.attack = common.pgd(eps=EPS, step_size=EPS, steps=1, rand_init=False)
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 2e-4
    c.optimizer.weight_decay_mode = "l2"  # wd * sum(w^2) / 2 in the loss
    c.schedule.name = "piecewise"
    minibatches = REPLAY_STEPS // REPLAYS
    c.schedule.boundaries_epochs = (40000 // REPLAYS / STEPS_PER_EPOCH,
                                    60000 // REPLAYS / STEPS_PER_EPOCH)
    c.train.method = "free"
    c.train.replays = REPLAYS
    c.train.epochs = math.ceil(minibatches / STEPS_PER_EPOCH)
    c.eval.attack = common.pgd(eps=EPS, step_size=2 / 255, steps=20)
    if args.smoke:
        c.model.kwargs = {"width": 8, "blocks": (1, 1, 1), "widen_factor": 1}
        common.fmnist_smoke(c)
        c.data.image_size = 32
        c.data.channels = 3
        c.attack.steps = 1
        c.train.replays = 2
    return c
