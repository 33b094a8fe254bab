"""LID detector on Fashion-MNIST (Ma et al., ICLR 2018, arXiv 1801.02613,
Sec. 3-4): per-layer local intrinsic dimensionality of the input's
activations among a clean reference minibatch's k nearest neighbours, and a
logistic-regression detector trained on clean, noisy and adversarial
examples.

Athalye et al. 2018 (arXiv 1802.00420, Sec. 5.1) and Carlini & Wagner
(arXiv 1705.07263's methodology) reduce it to ~0% detection with an attack
that includes the detector's loss (`detector_joint`).

Command:  python train.py --recipe=lid_fmnist --workdir=/tmp/lid
          python evaluate.py --workdir=/tmp/lid --num_examples=500
Smoke:    python train.py --recipe=lid_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and attack budgets: `common.detection_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.detection_recipe("lid", arg)
