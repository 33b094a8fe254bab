"""Feature squeezing joint detector on Fashion-MNIST (Xu, Evans & Qi, NDSS
2018, arXiv 1704.01155, Sec. 5, the MNIST squeezers of its Table 3:
1-bit depth and 2x2 median smoothing).

The score is the largest L1 distance between the classifier's softmax on
the input and on a squeezed copy; the threshold rejects 5% of held-out
clean images. He et al. 2017 (arXiv 1706.04701, Sec. 3) break it with the
joint-loss attack (BPDA through the bit-depth squeezer) at ~100% success
and a mean L2 only ~23% larger than against the undefended classifier.

Command:  python train.py --recipe=feature_squeezing_fmnist --workdir=/tmp/feature_squeezing
          python evaluate.py --workdir=/tmp/feature_squeezing --num_examples=500
Smoke:    python train.py --recipe=feature_squeezing_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and attack budgets: `common.detection_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.detection_recipe("feature_squeezing", arg)
