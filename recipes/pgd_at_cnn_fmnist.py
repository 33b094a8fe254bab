"""PGD adversarial training (Madry et al. 2018) of their MNIST CNN on
Fashion-MNIST at eps = 0.1: the README's main recipe.

Madry, Makelov, Schmidt, Tsipras, Vladu 2018, "Towards Deep Learning Models
Resistant to Adversarial Attacks", arXiv 1706.06083: the min-max objective
(Eq. 2.1) with the inner maximisation by L-inf PGD from a random start
(Sec. 3), and the MNIST challenge network (conv32-5x5, pool, conv64-5x5,
pool, fc1024). Their MNIST setting is eps = 0.3 with 40 steps of 0.01; on
Fashion-MNIST the usual budget is eps = 0.1. To fit a 10-minute CPU budget
we train with PGD-4 of step 2.5 * eps / 4 (the step rule of MadryLab's
`robustness` library, Engstrom et al. 2019), Adam 1e-3 with cosine decay
for 4 epochs, and evaluate with PGD-20 of step 0.01 from a random start.
Data: Xiao, Rasul, Vollgraf 2017 (arXiv 1708.07747), the real 60k / 10k.

Command:  python train.py --recipe=pgd_at_cnn_fmnist --workdir=/tmp/pgd
Then:     python evaluate.py --workdir=/tmp/pgd
Smoke:    python train.py --recipe=pgd_at_cnn_fmnist:smoke --workdir=/tmp/s
Hardware: 2-core x86-64 CPU, no GPU: 7 min of training (4 x ~105 s
epochs), 8 min 13 s with the PGD-20 evaluation of the 10k test images.
Reached here (results/pgd_at_cnn_fmnist/): clean 85.12%, FGSM 77.00%, PGD-20
74.72% (eps 0.1, step 0.01, random init); on the first 1000 test images,
PGD-100 x 5 restarts 74.40% and PGD-100 with the C&W loss 74.30%.
"""

import ml_collections

from recipes import common

EPS = 0.1  # L-inf, on the [0, 1] pixel scale (25.5 / 255)
TRAIN_STEPS = 4


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.madry_cnn_fmnist()
    c.attack = common.pgd(eps=EPS, step_size=2.5 * EPS / TRAIN_STEPS,
                          steps=TRAIN_STEPS)
    if args.smoke:
        common.madry_cnn_smoke(c)
    return c
