"""Detection defenses: a classifier plus adversarial-example detectors.

One module per defense, each assembling a `DetectionSystem` from its trained
parts (the training itself lives in `training/detection/`):

- `feature_squeezing`: Xu, Evans & Qi 2018 (arXiv 1704.01155);
- `specialists`: Specialists+1, Abbasi & Gagné 2017 (arXiv 1702.06856);
- `magnet`: Meng & Chen 2017 (arXiv 1705.09064);
- `lid`: Ma et al. 2018 (arXiv 1801.02613);
- `unrelated_detectors`: the ensemble of He et al. 2017 (arXiv 1706.04701).
"""

# Importing the defense modules registers their Keras layers, so that
# `load_system` can deserialize any saved system.
from models.detection import (feature_squeezing, lid, magnet,  # noqa: F401
                              specialists, unrelated_detectors)
from models.detection.detection_system import (DetectionSystem,
                                               is_system_dir, load_system)

__all__ = ["DetectionSystem", "is_system_dir", "load_system"]
