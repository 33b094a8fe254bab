"""Specialists+1 ensemble on Fashion-MNIST (Abbasi & Gagne 2017, arXiv
1702.06856, Sec. 3): a generalist plus, per class, one specialist on the
classes holding the top 80% of its confusions and one on the rest; the
voters' average confidence below the threshold rejects.

He et al. 2017 (arXiv 1706.04701, Sec. 4) break it with a targeted
high-confidence attack summing the losses of the classifiers a unanimous
vote needs (`specialists_targeted`), at a distortion only ~6% above the
generalist alone.

Command:  python train.py --recipe=specialists_fmnist --workdir=/tmp/specialists
          python evaluate.py --workdir=/tmp/specialists --num_examples=500
Smoke:    python train.py --recipe=specialists_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and attack budgets: `common.detection_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.detection_recipe("specialists", arg,
                                   adaptive="specialists_targeted",
                                   smoke={"epochs": 1,
                                          "confusion_images": 100,
                                          "max_per_class": 30})
