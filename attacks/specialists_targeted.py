"""The targeted high-confidence attack on Specialists+1.

Abbasi & Gagné 2017 (arXiv 1702.06856) reject an input unless the members
that can vote for a class agree on it with high average confidence. He et
al. 2017 (arXiv 1706.04701, Sec. 4) break the ensemble by attacking it
with a target `t` and the SUM of the losses of exactly the classifiers a
unanimous vote for `t` needs: the generalist and every specialist whose
class set holds `t`. Each gets C&W's targeted margin loss `max(max_{i != t}
Z_i - Z_t, -kappa)` on its own classes; a high `kappa` makes every one of
them confident, so the voters' average confidence clears the rejection
threshold (whose hinge is added too, as in `detector_joint`).

The search (Adam in tanh space, binary search on c, candidates re-tested
on the full system) is `attacks.detector_joint.minimum_l2` in `members`
mode: the system's `components["members"]` maps images to the members'
logits `(batch, M, classes)` (entries outside a member's set ignored) and
`arrays["class_sets"]` is the bool `(M, classes)` table of their sets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attacks._registry import register_system_attack
from attacks.detector_joint import minimum_l2


def random_targets(y: Any, num_classes: int, seed: int = 0) -> np.ndarray:
    """A uniformly random wrong label per example, int32 `(batch,)`."""
    y = np.asarray(y, np.int64)
    shift = np.random.default_rng(seed).integers(1, num_classes, len(y))
    return ((y + shift) % num_classes).astype(np.int32)


@register_system_attack("specialists_targeted")
def specialists_targeted(system: Any, x: Any, y: Any, *,
                         confidence: float = 5.0,
                         detector_margin: float = 0.1, c_init: float = 1.0,
                         binary_search_steps: int = 5, steps: int = 100,
                         learning_rate: float = 0.05, restarts: int = 1,
                         init_std: float = 0.05,
                         seed: int = 0) -> np.ndarray:
    """Targeted high-confidence minimum-L2 attack on Specialists+1.

    Args:
        system: a calibrated Specialists+1 `DetectionSystem` (it must have
            `components["members"]` and `arrays["class_sets"]`).
        x: float32 `(batch, H, W, C)` in `[0, 1]`.
        y: int `(batch,)` TARGET labels (see `random_targets`).
        confidence: kappa >= 0, the margin every needed member must give
            the target (default 5: a high-confidence attack).
        detector_margin, c_init, binary_search_steps, steps, learning_rate,
        restarts, init_std, seed: as in `attacks.detector_joint`.

    Returns:
        float32 NumPy `(batch, H, W, C)` in `[0, 1]`: the smallest-L2 point
        found that the full system classifies as the target and accepts;
        `x` itself where none was found.

    Raises:
        ValueError: a bad scalar argument (named), an uncalibrated system,
            or a system without members.
    """
    if "members" not in system.components or "class_sets" not in \
            system.arrays:
        raise ValueError(f"specialists_targeted needs a Specialists+1 system"
                         f" (members and class_sets); got {system.kind!r}")
    return minimum_l2(system, x, y, targeted=True, members=True,
                      confidence=confidence, detector_margin=detector_margin,
                      c_init=c_init, binary_search_steps=binary_search_steps,
                      steps=steps, learning_rate=learning_rate,
                      restarts=restarts, init_std=init_std, seed=seed)
