"""Serializable Keras 3 defense layers (importing registers them).

Each declares the class attributes `differentiable` and `randomized`, which
evaluation reads to insist on BPDA (non-differentiable layers) or EOT
(randomized layers), after Athalye, Carlini & Wagner 2018 (arXiv
1802.00420). All take channels-last float32 inputs; input-level defenses
expect pixels in [0, 1].
"""

from layers.defense_gan_projection import DefenseGanProjection
from layers.image_quilting import ImageQuilting
from layers.jpeg_compression import JpegCompression
from layers.nonlocal_denoise import NonLocalDenoise
from layers.pixel_defend import PixelDefend
from layers.random_resize_pad import RandomResizePad
from layers.squeezers import BitDepthReduction, MedianSmoothing2D
from layers.stochastic_activation_pruning import StochasticActivationPruning
from layers.thermometer import ThermometerEncoding
from layers.total_variation_minimization import TotalVariationMinimization

__all__ = ["BitDepthReduction", "DefenseGanProjection", "ImageQuilting",
           "JpegCompression", "MedianSmoothing2D", "NonLocalDenoise",
           "PixelDefend", "RandomResizePad", "StochasticActivationPruning",
           "ThermometerEncoding", "TotalVariationMinimization"]
