"""Natural (standard) training of the Madry et al. CNN on Fashion-MNIST.

The baseline row of every robustness table: the same network and schedule
as `pgd_at_cnn_fmnist`, without adversarial examples. Madry et al. 2018
(arXiv 1706.06083, Sec. 5 / Table 1, "natural" rows) report that such a
network has near-zero accuracy under PGD; data: Xiao et al. 2017 (arXiv
1708.07747).

Command:  python train.py --recipe=standard_cnn_fmnist --workdir=/tmp/std
Smoke:    python train.py --recipe=standard_cnn_fmnist:smoke --workdir=/tmp/s
Hardware: 2-core x86-64 CPU, no GPU: 2 min of training (4 x ~29 s epochs),
3 min 7 s with the PGD-20 evaluation of the 10k test images.
Reached here (results/standard_cnn_fmnist/): clean 92.30%, FGSM 22.84%,
PGD-20 6.95% (eps 0.1, step 0.01, random init).
"""

import ml_collections

from recipes import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.madry_cnn_fmnist()
    if args.smoke:
        common.madry_cnn_smoke(c)
    return c
