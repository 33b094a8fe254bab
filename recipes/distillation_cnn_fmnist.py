"""Defensive distillation (Papernot et al. 2016) of the Madry et al. CNN on
Fashion-MNIST at T = 100: teacher and student from one command.

Papernot, McDaniel, Wu, Jha, Swami 2016, "Distillation as a Defense to
Adversarial Perturbations against Deep Neural Networks", arXiv 1511.04508,
Sec. IV: train a teacher with softmax(z / T) on the labels, then a student
of the same architecture with softmax(z / T) on the teacher's soft labels,
and deploy the student at T = 1. T = 100 as in their MNIST/CIFAR results.
Carlini & Wagner 2016 ("Defensive Distillation is Not Robust to Adversarial
Examples", arXiv 1607.04311) show that the defense only masks gradients:
CE-loss attacks (FGSM, PGD) fail on the student, attacks on the logits
(C&W) succeed. The model zoo reports both. Network, data, optimiser and
schedule per stage as in `standard_cnn_fmnist` (4 epochs each).

Command:  python train.py --recipe=distillation_cnn_fmnist --workdir=/tmp/d
Then:     python evaluate.py --workdir=/tmp/d   (plus --attack=cw_l2 ...)
Smoke:    python train.py --recipe=distillation_cnn_fmnist:smoke --workdir=/tmp/s
The teacher lands in <workdir>/teacher/, the student in <workdir>/.
Hardware and numbers (results/distillation_cnn_fmnist/, README model zoo):
on a 2-core CPU (shared) teacher 4 min 23 s + student 5 min 03 s; on the 10k
test images clean 88.20%, FGSM 81.47%, PGD-20 80.76% (the cross-entropy
gradient vanishes), while C&W L2 succeeds on 100% of the first 500 and
PGD-100 with the C&W margin loss leaves 10.20% of the first 1000: the
defense masks gradients, as Carlini & Wagner found.
"""

import ml_collections

from recipes import common

TEMPERATURE = 100.0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg)
    c = common.madry_cnn_fmnist()
    c.train.method = "distillation"
    c.train.temperature = TEMPERATURE
    if args.smoke:
        common.madry_cnn_smoke(c)
    return c
