"""Measuring robustness: clean and robust accuracy over a dataset
(`robust_accuracy`), threat-model labels (`attack_label`), the attacker-suite
runner, gradient-masking sanity checks, curves, transfer matrices,
destruction rates and the CAAD submission reader. Implementation lives in
the modules named after each piece; this file only re-exports the two
functions most callers need.
"""

from evaluation.accuracy import robust_accuracy
from evaluation.attack_labels import attack_label

__all__ = ["attack_label", "robust_accuracy"]
