"""The bottom of the layering: generic helpers that every other package may
use and that import nothing of the project (data/ and layers/ -> models/ ->
attacks/ -> training/ -> train.py / evaluate.py all sit above it).

- `core.registry.Registry`: the name -> object registry behind
  `models.create_model`, `attacks.get_attack`, `checkpoints.get` and
  `training.build_trainer`.
- `core.keras_internals`: the only module that touches private Keras API,
  each use cited and tested (tests/core/test_keras_internals.py).
"""
