"""JPEG compression as an input purifier on Fashion-MNIST (Guo, Rana,
Cisse & van der Maaten, ICLR 2018, arXiv 1711.00117, Sec. 3.4; quality 75).

Non-differentiable: evaluate.py attacks it with BPDA (identity backward),
as Athalye et al. 2018 (arXiv 1802.00420, Sec. 5.4.1) did, who reduced the
input transformations to 0% accuracy at their eps.

Command:  python train.py --recipe=jpeg_fmnist --workdir=/tmp/jpeg
          python evaluate.py --workdir=/tmp/jpeg --num_examples=500
Smoke:    python train.py --recipe=jpeg_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and evaluation protocol: `common.purifier_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.purifier_recipe(
        "jpeg", arg, fit={"quality": 75})
