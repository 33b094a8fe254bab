""""Fast" adversarial training (Wong et al. 2020) of the Madry et al. CNN on
Fashion-MNIST at eps = 0.1: FGSM from a random start, cyclic learning rate,
early stop on catastrophic overfitting.

Wong, Rice, Kolter 2020, "Fast is better than free: Revisiting adversarial
training", arXiv 2001.03994, Alg. 3: delta ~ U(-eps, eps), one FGSM step of
alpha = 1.25 eps, projection onto the eps-ball (here `pgd` with steps=1,
rand_init=True, step_size=1.25 eps: the same computation); a one-cycle
triangular learning rate peaking at 2/5 of training (Sec. 5.1); and the
early stop of Sec. 5.3: PGD accuracy on a training minibatch (500 images,
PGD-10) at each epoch end, restoring the best epoch if it falls by more than
0.2. The network, data and epochs match `pgd_at_cnn_fmnist`, so the two rows
of the model zoo compare the methods at equal epochs; each step costs 2
gradient passes here against PGD-4's 5.

Command:  python train.py --recipe=fast_at_cnn_fmnist --workdir=/tmp/fast
Then:     python evaluate.py --workdir=/tmp/fast
Smoke:    python train.py --recipe=fast_at_cnn_fmnist:smoke --workdir=/tmp/s
Hardware and numbers: see results/fast_at_cnn_fmnist/ and the README model
zoo (written from the evaluate.py reports).
"""

import ml_collections

from recipes import common

EPS = 0.1  # L-inf, on the [0, 1] pixel scale


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.base_config()
    c.model.name = "madry_cnn"
    c.data.name = "fashion_mnist"
    c.data.global_batch_size = 100
    c.attack = common.pgd(eps=EPS, step_size=1.25 * EPS, steps=1,
                          rand_init=True)  # FGSM-RS, Wong et al. Alg. 3
    c.optimizer.learning_rate = 2e-3  # the peak of the cycle
    c.schedule.name = "cyclic"
    c.schedule.peak_fraction = 0.4
    c.train.epochs = 4
    c.train.overfit_check = common.overfit_check(
        attack=common.pgd(eps=EPS, step_size=EPS / 4, steps=10))
    c.eval.attack = common.pgd(eps=EPS, step_size=0.01, steps=20)
    if args.smoke:
        c.model.kwargs = {"width": 8}
        common.fmnist_smoke(c)
        c.attack.steps = 1
    return c
