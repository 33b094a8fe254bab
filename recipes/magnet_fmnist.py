"""MagNet on Fashion-MNIST (Meng & Chen, CCS 2017, arXiv 1705.09064, Sec.
5 and its MNIST architecture): two autoencoder detectors (reconstruction
error), the probability-divergence detectors (JSD at T=10, 40), and the
autoencoder reformer in front of the classifier.

Carlini & Wagner 2017 (arXiv 1711.08478) break it white-box with C&W
through the reformer and detectors (`detector_joint`), ~100% success.

Command:  python train.py --recipe=magnet_fmnist --workdir=/tmp/magnet
          python evaluate.py --workdir=/tmp/magnet --num_examples=500
Smoke:    python train.py --recipe=magnet_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and attack budgets: `common.detection_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.detection_recipe("magnet", arg,
                                   smoke={"epochs": 1})
