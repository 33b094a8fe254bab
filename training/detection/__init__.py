"""Training of the detection defenses: one module per defense, each with
`fit_<name>(classifier, x_train, y_train, seed=..., **settings)` returning
an uncalibrated `models.detection.DetectionSystem` (training.defense_stage
calibrates and saves it)."""
