"""The ensemble of unrelated detectors of He et al. 2017 (arXiv 1706.04701,
Sec. 5) on Fashion-MNIST: an input binary classifier (Gong et al. 2017,
arXiv 1704.04960), a detector subnetwork on inner features (Metzen et al.
2017, arXiv 1702.04267) and kernel density estimation (Feinman et al.
2017, arXiv 1703.00410). Rejected when any of them fires.

He et al. fool all three at once with the joint-loss attack
(`detector_joint`).

Command:  python train.py --recipe=unrelated_detectors_fmnist --workdir=/tmp/unrelated_detectors
          python evaluate.py --workdir=/tmp/unrelated_detectors --num_examples=500
Smoke:    python train.py --recipe=unrelated_detectors_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and attack budgets: `common.detection_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.detection_recipe("unrelated_detectors", arg,
                                   smoke={"epochs": 1})
