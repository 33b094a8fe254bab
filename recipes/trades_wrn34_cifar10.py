"""TRADES (Zhang et al. 2019) training of WRN-34-10 on CIFAR-10 at
eps = 0.031 L-inf, beta = 6: the paper's CIFAR-10 setting.

Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan 2019, "Theoretically Principled
Trade-off between Robustness and Accuracy", arXiv 1901.08573, Eq. (5),
Algorithm 1 and Table 5 (beta = 6), with the defaults of the authors' code
(github.com/yaodongyu/TRADES, train_trades_cifar10.py / trades.py): WRN-34-10
without dropout, batch 128, SGD LR 0.1 momentum 0.9, weight decay 2e-4
(PyTorch's, i.e. coupled L2 added to the gradient), 76 epochs with the LR
x0.1 from epoch 75 (1-indexed; here after 74 epochs), random crop + flip,
eps 0.031 (~8/255), 10 steps of 0.007 started at x + 0.001 * N(0, 1),
beta 6. Evaluation: PGD-20 of step 0.003 from a random start, eps 0.031
(their pgd_attack_cifar10.py defaults).

Command:  python train.py --recipe=trades_wrn34_cifar10 --workdir=/tmp/t10
Smoke:    python train.py --recipe=trades_wrn34_cifar10:smoke --workdir=/tmp/s
Hardware: needs CIFAR-10 from tensorflow-datasets (network) and a GPU; NOT
run here (no CIFAR-10, no GPU on this 2-core CPU machine), so numbers: see
results/trades_wrn34_cifar10/ and the README model zoo once run. Anchor,
the authors' README leaderboard for their checkpoint: 84.92% clean, 56.61%
under their PGD-20 ("FGSM-20"), 53.08% under AutoAttack.
The smoke variant trains on real Fashion-MNIST tiled to 3 channels.
"""

import ml_collections

from recipes import common

EPS = 0.031  # L-inf, the code's value (8 / 255 = 0.0314)
BETA = 6.0  # 1 / lambda (Table 5)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.base_config()
    c.model.name = "wrn34_10"
    c.data.name = "cifar10"
    c.data.global_batch_size = 128
    c.data.augment = True  # 4-px pad + random 32x32 crop, horizontal flip
    c.attack = common.pgd(eps=EPS, step_size=0.007, steps=10,
                          rand_init=False)  # TRADES starts at x + 0.001 N
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 2e-4
    c.optimizer.weight_decay_mode = "l2"  # PyTorch SGD's coupled decay
    c.schedule.name = "piecewise"
    c.schedule.boundaries_epochs = (74,)  # x0.1 for 1-indexed epochs >= 75
    c.train.method = "trades"
    c.train.beta = BETA
    c.train.epochs = 76
    c.eval.attack = common.pgd(eps=EPS, step_size=0.003, steps=20)
    if args.smoke:
        c.model.kwargs = {"width": 8, "blocks": (1, 1, 1), "widen_factor": 1}
        common.fmnist_smoke(c)
        c.data.image_size = 32
        c.data.channels = 3
    return c
