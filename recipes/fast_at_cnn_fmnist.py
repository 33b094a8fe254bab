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
Hardware and numbers (results/fast_at_cnn_fmnist/, README model zoo): on a
2-core CPU (shared with other jobs) the fit took 3 min 57 s against
pgd_at_cnn_fmnist's 7 min 02 s; on the 10k test images clean 86.60%, FGSM
78.12%, PGD-20 73.99% (PGD-AT: 74.72%, so within 1 point), and on the first
1000 PGD-100 x 5 restarts 73.30%, PGD-100 with the C&W loss 74.00%. The
overfitting check never fired (held-out PGD-10 accuracy 0.65 -> 0.77).
"""

import ml_collections

from recipes import common

EPS = 0.1  # L-inf, on the [0, 1] pixel scale


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.madry_cnn_fmnist()
    c.attack = common.pgd(eps=EPS, step_size=1.25 * EPS, steps=1,
                          rand_init=True)  # FGSM-RS, Wong et al. Alg. 3
    c.optimizer.learning_rate = 2e-3  # the peak of the cycle
    c.schedule.name = "cyclic"
    c.schedule.peak_fraction = 0.4
    c.train.overfit_check = common.overfit_check(
        attack=common.pgd(eps=EPS, step_size=EPS / 4, steps=10))
    if args.smoke:
        common.madry_cnn_smoke(c)
        c.attack.steps = 1
    return c
