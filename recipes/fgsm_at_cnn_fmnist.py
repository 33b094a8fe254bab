"""FGSM adversarial training (Goodfellow et al. 2015) of the Madry et al. CNN
on Fashion-MNIST at eps = 0.1.

Goodfellow, Shlens, Szegedy 2015, "Explaining and Harnessing Adversarial
Examples", arXiv 1412.6572, Sec. 6, Eq. 6: the alpha-mixed objective

    J~(theta, x, y) = alpha J(theta, x, y)
                      + (1 - alpha) J(theta, x + eps sign(grad_x J), y)

with alpha = 0.5 and FGSM crafted on the current model at every step (true
labels, no random start). Their MNIST maxout network went from 89.4% to
17.9% error under FGSM (seed 001). The network, data, optimiser and
schedule are those of `standard_cnn_fmnist` / `pgd_at_cnn_fmnist`, so the
three rows of the model zoo differ only in the training attack.

Command:  python train.py --recipe=fgsm_at_cnn_fmnist --workdir=/tmp/fgsm
Then:     python evaluate.py --workdir=/tmp/fgsm
Smoke:    python train.py --recipe=fgsm_at_cnn_fmnist:smoke --workdir=/tmp/s
Hardware and numbers: see results/fgsm_at_cnn_fmnist/ and the README model
zoo (written from the evaluate.py reports).
"""

import ml_collections

from recipes import common

EPS = 0.1  # L-inf, on the [0, 1] pixel scale


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.madry_cnn_fmnist()
    c.attack = ml_collections.ConfigDict({"name": "fgsm", "eps": EPS})
    c.train.alpha = 0.5  # Goodfellow et al. 2015, Eq. 6
    if args.smoke:
        common.madry_cnn_smoke(c)
    return c
