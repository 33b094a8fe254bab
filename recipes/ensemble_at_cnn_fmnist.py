"""Ensemble adversarial training (Tramer et al. 2018) of the Madry et al. CNN
on Fashion-MNIST at eps = 0.1, with FGSM examples crafted in turn on the
trained network and on static pre-trained networks.

Tramer, Kurakin, Papernot, Goodfellow, Boneh, McDaniel 2018, "Ensemble
Adversarial Training: Attacks and Defenses", ICLR, arXiv 1705.07204,
Sec. 3.4 and 4.2: per batch, the source of the adversarial examples is drawn
at random among the current model and the static ones, and half of the batch
is replaced by single-step examples (Kurakin et al. 2017, arXiv 1611.01236,
Alg. 1, here with lambda = 1). Their MNIST experiments (Appendix B, code at
github.com/ftramer/ensemble-adv-training) use FGSM on the source's predicted
labels, Adam at its default 1e-3 and static models of other architectures;
eps = 0.3 there, 0.1 here as in the other Fashion-MNIST rows of the zoo. The
defense targets transferred (black-box) examples: evaluate white-box PGD-20
(eval.attack) and transfer attacks from a held-out model.

First train the static models (the first differs from the trained network
by its seed, the second also by its architecture), then this recipe:

    python train.py --recipe=standard_cnn_fmnist --workdir=/tmp/e1 \
        --recipe.train.seed=1
    python train.py --recipe=standard_cnn_fmnist --workdir=/tmp/e2 \
        --recipe.train.seed=2 --recipe.model.name=resnet20
    python train.py --recipe=ensemble_at_cnn_fmnist --workdir=/tmp/ens \
    --recipe.train.static_models="('/tmp/e1/model.keras','/tmp/e2/model.keras')"
Then:     python evaluate.py --workdir=/tmp/ens
Smoke:    python train.py --recipe=ensemble_at_cnn_fmnist:smoke \
    --workdir=/tmp/s --recipe.train.static_models="('/tmp/e1/model.keras',)"
Without static models (the default empty tuple) training stops before its
first step with an error saying how to pass them. Hardware and
numbers (results/ensemble_at_cnn_fmnist/, README model zoo): two static
standard CNNs (seeds 1, 2; 2 epochs, 1-1.5 min each), then a 4 min 31 s fit
on a shared 2-core CPU; clean 90.22%, FGSM 63.21%, white-box PGD-20 43.83%
(ensemble AT aims at transferred attacks, not white-box PGD).
"""

import ml_collections

from recipes import common

EPS = 0.1  # L-inf, on the [0, 1] pixel scale


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.madry_cnn_fmnist()
    # FGSM on the source's own predictions (Tramer et al.'s MNIST code).
    c.attack = ml_collections.ConfigDict({"name": "fgsm", "eps": EPS})
    c.train.method = "ensemble"
    c.train.static_models = ()  # paths of .keras files, see the docstring
    c.train.adv_fraction = 0.5  # half of each batch adversarial (Sec. 4.2)
    c.train.adv_weight = 1.0  # Kurakin et al.'s lambda
    c.train.source_selection = "random"  # per batch, uniform (Sec. 4.2)
    c.train.attack_labels = "predicted"
    if args.smoke:
        common.madry_cnn_smoke(c)
    return c
