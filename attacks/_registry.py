"""The attack registry: `register_attack(name)` decorates an attack function
so that recipes and evaluation suites can name it."""

from core.registry import Registry

ATTACKS = Registry("attack")
register_attack = ATTACKS.register

# Attacks on a whole detection system (`models.detection.DetectionSystem`:
# classifier + detectors + thresholds) rather than on a logits model; their
# first argument is the system.
SYSTEM_ATTACKS = Registry("detection-system attack")
register_system_attack = SYSTEM_ATTACKS.register
