"""The attack registry: `register_attack(name)` decorates an attack function
so that recipes and evaluation suites can name it."""

from core.registry import Registry

ATTACKS = Registry("attack")
register_attack = ATTACKS.register
