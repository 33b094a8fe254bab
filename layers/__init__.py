"""Serializable Keras 3 defense layers (importing registers them).

Each declares the class attributes `differentiable` and `randomized`, which
evaluation reads to insist on BPDA (non-differentiable layers) or EOT
(randomized layers), after Athalye, Carlini & Wagner 2018 (arXiv
1802.00420). All take channels-last float32 inputs; input-level defenses
expect pixels in [0, 1].
"""

from layers.nonlocal_denoise import NonLocalDenoise
from layers.random_resize_pad import RandomResizePad
from layers.squeezers import BitDepthReduction, MedianSmoothing2D
from layers.stochastic_activation_pruning import StochasticActivationPruning
from layers.thermometer import ThermometerEncoding

__all__ = ["BitDepthReduction", "MedianSmoothing2D", "NonLocalDenoise",
           "RandomResizePad", "StochasticActivationPruning",
           "ThermometerEncoding"]
