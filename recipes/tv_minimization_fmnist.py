"""Total-variation minimization as an input purifier on Fashion-MNIST
(Guo et al., ICLR 2018, arXiv 1711.00117, Sec. 3.2): random pixel dropout,
then the TV-regularised reconstruction.

Randomized and non-differentiable: evaluate.py attacks it with BPDA + EOT
(Athalye et al. 2018, arXiv 1802.00420, Sec. 5.4.1).

Command:  python train.py --recipe=tv_minimization_fmnist --workdir=/tmp/tv_minimization
          python evaluate.py --workdir=/tmp/tv_minimization --num_examples=500
Smoke:    python train.py --recipe=tv_minimization_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and evaluation protocol: `common.purifier_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.purifier_recipe(
        "tv_minimization", arg, fit={"drop_prob": 0.5, "tv_weight": 0.03, "steps": 200}, smoke={"steps": 10})
