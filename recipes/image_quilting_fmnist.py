"""Image quilting as an input purifier on Fashion-MNIST (Guo et al., ICLR
2018, arXiv 1711.00117, Sec. 3.3): each patch replaced by one of its K
nearest neighbours in a database of clean training patches.

Randomized and non-differentiable: evaluate.py attacks it with BPDA + EOT
(Athalye et al. 2018, arXiv 1802.00420, Sec. 5.4.1).

Command:  python train.py --recipe=image_quilting_fmnist --workdir=/tmp/image_quilting
          python evaluate.py --workdir=/tmp/image_quilting --num_examples=500
Smoke:    python train.py --recipe=image_quilting_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and evaluation protocol: `common.purifier_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.purifier_recipe(
        "image_quilting", arg,
        fit={"patch_size": 4, "neighbours": 10, "max_patches": 20000},
        smoke={"max_patches": 2000})
