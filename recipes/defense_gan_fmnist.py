"""Defense-GAN on Fashion-MNIST (Samangouei, Kabkab & Chellappa, ICLR
2018, arXiv 1805.06605): a GAN trained here, then each input is projected
onto the generator's range by L gradient-descent steps on z from R random
starts, and the classifier reads G(z*).

Randomized and non-differentiable: evaluate.py attacks it with BPDA + EOT
(Athalye et al. 2018, arXiv 1802.00420, Sec. 5.4.1).

Command:  python train.py --recipe=defense_gan_fmnist --workdir=/tmp/defense_gan
          python evaluate.py --workdir=/tmp/defense_gan --num_examples=500
Smoke:    python train.py --recipe=defense_gan_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and evaluation protocol: `common.purifier_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.purifier_recipe(
        "defense_gan", arg,
        fit={"epochs": 3, "width": 32, "latent_dim": 128, "steps": 200,
             "restarts": 10},
        smoke={"epochs": 1, "steps": 5, "restarts": 2})
