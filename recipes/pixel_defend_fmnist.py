"""PixelDefend on Fashion-MNIST (Song et al., ICLR 2018, arXiv
1710.10766, Algorithm 1): a PixelCNN trained here, then greedy
eps-bounded purification in raster order.

Non-differentiable: evaluate.py attacks it with BPDA (identity backward),
as Athalye et al. 2018 (arXiv 1802.00420, Sec. 5.4.2) did.

Command:  python train.py --recipe=pixel_defend_fmnist --workdir=/tmp/pixel_defend
          python evaluate.py --workdir=/tmp/pixel_defend --num_examples=500
Smoke:    python train.py --recipe=pixel_defend_fmnist:smoke --workdir=/tmp/s
Reuse a classifier and evaluation protocol: `common.purifier_recipe`.
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return common.purifier_recipe(
        "pixel_defend", arg, fit={"epochs": 1, "filters": 16, "num_layers": 3}, smoke={"epochs": 1})
