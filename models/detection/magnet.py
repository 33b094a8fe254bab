"""MagNet: autoencoder detectors and a reformer (Meng & Chen 2017).

Meng & Chen 2017, "MagNet: a Two-Pronged Defense against Adversarial
Examples", CCS (arXiv 1705.09064):

- detectors by reconstruction error (Sec. 3.2): `E(x) = ||x - ae(x)||_p`;
  the MNIST defense (Sec. 5, and the authors' `test_defense.py`) has
  detector I = the L2 error of autoencoder I and detector II = the L1
  error of autoencoder II;
- detectors by probability divergence (Sec. 3.2):
  `JSD(softmax(f(x) / T) || softmax(f(ae(x)) / T))` with the classifier's
  logits `f`; the paper used them (T = 10 and T = 40) on CIFAR-10 only, its
  MNIST defense having just the two reconstruction detectors. They are
  added here on request, with autoencoder I;
- the reformer (Sec. 3.3): the system classifies `ae_I(x)`, not `x`
  (autoencoder I on MNIST).

Autoencoders (Sec. 5, the MNIST architecture table; the authors'
`defensive_models.py`): 3x3 convs with sigmoid activations and "same"
padding; autoencoder I is conv 3, 2x2 average pool, conv 3 | conv 3, 2x2
upsample, conv 3, conv C (the output); autoencoder II is conv 3 | conv 3,
conv C. Every conv carries an L2 ACTIVITY regularizer of 1e-9 (on its
output, as the authors' Keras code does, not on its weights). Training
(denoising, MSE) is in `training/detection/magnet.py`.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from models.detection.detection_system import DetectionSystem

PAPER = "Meng & Chen 2017, MagNet, CCS (arXiv 1705.09064)"
# The MNIST autoencoders: "I" has a 2x2 average pool between its convs.
STRUCTURES = {"I": (3, "average", 3), "II": (3,)}


def _sum_over_features(v):
    return ops.sum(v, axis=tuple(range(1, len(v.shape))))


@keras.saving.register_keras_serializable(package="robust_recipes")
class ReconstructionError(keras.layers.Layer):
    """`||x - x_rec||_p` over all pixels of each image (Meng & Chen 2017,
    arXiv 1705.09064, Sec. 3.2).

    The authors' code thresholds `mean(|x - x_rec|^p)`, a monotone function
    of this norm, so the two reject the same inputs at calibrated
    thresholds. For `norm="2"` the sum of squares is floored at 1e-12
    before the square root (finite gradient at a perfect reconstruction).

    Threat model: `differentiable = True`, `randomized = False`.

    Args:
        norm: "1" or "2".

    Call arguments:
        inputs: `[x, x_rec]`, two float32 tensors of one shape
            `(batch, height, width, channels)`, pixels in `[0, 1]`.

    Returns:
        float32 `(batch, 1)`, >= 0.

    Raises:
        ValueError: `norm` not in ("1", "2").
    """

    differentiable = True
    randomized = False

    def __init__(self, norm="2", **kwargs):
        super().__init__(**kwargs)
        if norm not in ("1", "2"):
            raise ValueError(f"norm must be one of ('1', '2'); got {norm!r}")
        self.norm = norm

    def call(self, inputs):
        x, x_rec = inputs
        diff = ops.cast(x, "float32") - ops.cast(x_rec, "float32")
        if self.norm == "1":
            err = _sum_over_features(ops.abs(diff))
        else:
            err = ops.sqrt(ops.maximum(_sum_over_features(diff * diff),
                                       1e-12))
        return ops.expand_dims(err, -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        return {**super().get_config(), "norm": self.norm}


@keras.saving.register_keras_serializable(package="robust_recipes")
class JensenShannonDivergence(keras.layers.Layer):
    """Jensen-Shannon divergence, natural log, between `softmax(a / T)` and
    `softmax(b / T)` (Meng & Chen 2017, arXiv 1705.09064, Sec. 3.2):
    `0.5 KL(P || M) + 0.5 KL(Q || M)` with `M = (P + Q) / 2`, in [0, ln 2].

    It is the divergence itself, i.e. the square of
    `scipy.spatial.distance.jensenshannon` (base e). Computed from
    log-softmaxes (`log M = logaddexp(log P, log Q) - log 2`), so saturated
    softmaxes stay finite.

    Threat model: `differentiable = True`, `randomized = False`.

    Args:
        temperature: T > 0 (the paper: 10 and 40).

    Call arguments:
        inputs: `[logits_a, logits_b]`, float32 `(batch, classes)` each.

    Returns:
        float32 `(batch, 1)`.

    Raises:
        ValueError: `temperature <= 0`.
    """

    differentiable = True
    randomized = False

    def __init__(self, temperature=10.0, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(temperature, (int, float))
                and not isinstance(temperature, bool) and temperature > 0):
            raise ValueError(f"temperature must be a number > 0; got "
                             f"{temperature!r}")
        self.temperature = float(temperature)

    def call(self, inputs):
        log_p, log_q = (ops.log_softmax(ops.cast(z, "float32")
                                        / self.temperature, axis=-1)
                        for z in inputs)
        log_m = ops.logaddexp(log_p, log_q) - np.log(2.0)
        kl_p = ops.sum(ops.exp(log_p) * (log_p - log_m), axis=-1)
        kl_q = ops.sum(ops.exp(log_q) * (log_q - log_m), axis=-1)
        return ops.expand_dims(0.5 * (kl_p + kl_q), -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def magnet_autoencoder(structure: str = "I",
                       input_shape: tuple[int, int, int] = (28, 28, 1),
                       activity_l2: float = 1e-9) -> keras.Model:
    """MagNet's MNIST autoencoder I or II (Meng & Chen 2017, Sec. 5).

    Args:
        structure: "I" (conv 3, avg-pool 2, conv 3 | conv 3, upsample 2,
            conv 3, conv C) or "II" (conv 3 | conv 3, conv C); all convs
            3x3, sigmoid, "same" padding.
        input_shape: `(height, width, channels)`; height and width even for
            "I".
        activity_l2: L2 activity regularization of every conv (1e-9).

    Returns:
        A `keras.Model` float32 `(batch, height, width, channels)` in
        `[0, 1]` -> same shape in `(0, 1)`, named "magnet_ae_<structure>".

    Raises:
        ValueError: unknown `structure`, or odd sides for "I".
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {tuple(STRUCTURES)}; "
                         f"got {structure!r}")
    h, w, c = input_shape
    if structure == "I" and (h % 2 or w % 2):
        raise ValueError(f"autoencoder I needs even height and width; got "
                         f"input_shape {tuple(input_shape)!r}")
    spec = STRUCTURES[structure]
    inputs = keras.Input(input_shape, name="image")
    x, n = inputs, 0

    def conv(x, filters):
        nonlocal n
        n += 1
        return keras.layers.Conv2D(
            filters, 3, padding="same", activation="sigmoid",
            activity_regularizer=keras.regularizers.L2(activity_l2),
            name=f"conv{n}")(x)

    for item in spec:  # encoder
        x = (keras.layers.AveragePooling2D(2, padding="same", name="pool")(x)
             if item == "average" else conv(x, item))
    for item in reversed(spec):  # decoder mirrors it
        x = (keras.layers.UpSampling2D(2, name="upsample")(x)
             if item == "average" else conv(x, item))
    return keras.Model(inputs, conv(x, c),
                       name=f"magnet_ae_{structure.lower()}")


def _check_autoencoder(ae, name, shape):
    if tuple(ae.input_shape[1:]) != shape or \
            tuple(ae.output_shape[1:]) != shape:
        raise ValueError(f"{name} must map images {shape} to the same shape; "
                         f"got {ae.input_shape} -> {ae.output_shape}")


def magnet_system(classifier: keras.Model, ae_1: keras.Model,
                  ae_2: keras.Model,
                  temperatures: Sequence[float] = (10, 40)
                  ) -> DetectionSystem:
    """Assembles MagNet (uncalibrated) from its trained parts.

    Detector columns: "recon_l2_ae1" (`||x - ae_1(x)||_2`), "recon_l1_ae2"
    (`||x - ae_2(x)||_1`), then "jsd_T<T>" per temperature
    (`JSD(softmax(f(x)/T), softmax(f(ae_1(x))/T))`). The system's classifier
    is the reformer `f(ae_1(x))`. The paper's MNIST defense is the two
    reconstruction columns alone (`temperatures=()`), each thresholded at
    a 0.1% false-positive rate (the authors' `test_defense.py`); this
    project calibrates to a joint rate with `DetectionSystem.calibrate`.

    Args:
        classifier: float32 images `(batch, H, W, C)` in `[0, 1]` -> logits
            `(batch, classes)`.
        ae_1, ae_2: autoencoders images -> images of the same shape (see
            `magnet_autoencoder`).
        temperatures: softmax temperatures of the divergence detectors,
            each > 0 and distinct (the paper's CIFAR-10 setting: 10, 40).

    Returns:
        A `DetectionSystem` of kind "magnet", components "base",
        "autoencoder_1", "autoencoder_2".

    Raises:
        ValueError: an autoencoder whose shapes differ from the
            classifier's input, or a bad temperature.
    """
    shape = tuple(classifier.input_shape[1:])
    _check_autoencoder(ae_1, "ae_1", shape)
    _check_autoencoder(ae_2, "ae_2", shape)
    temps = [float(t) for t in temperatures]
    if len(set(temps)) != len(temps):
        raise ValueError(f"temperatures must be distinct; got {temps}")
    names = ["recon_l2_ae1", "recon_l1_ae2"] + [
        f"jsd_T{t:g}" for t in temps]
    x = keras.Input(shape, name="image")
    x_rec = ae_1(x)
    columns = [ReconstructionError("2", name=names[0])([x, x_rec]),
               ReconstructionError("1", name=names[1])([x, ae_2(x)])]
    if temps:
        logits, logits_rec = classifier(x), classifier(x_rec)
        columns += [JensenShannonDivergence(t, name=n)([logits, logits_rec])
                    for t, n in zip(temps, names[2:])]
    detector = keras.Model(x, keras.layers.Concatenate(name="scores")(columns),
                           name="magnet_detector")
    xr = keras.Input(shape, name="image")
    reformed = keras.Model(xr, classifier(ae_1(xr)), name="magnet_reformed")
    config = {"paper": PAPER, "temperatures": temps,
              "reformer": "autoencoder_1",
              "divergence_autoencoder": "autoencoder_1",
              "paper_mnist_detectors": names[:2],
              "paper_fpr_per_detector": 0.001}
    return DetectionSystem(
        "magnet", reformed, detector, names,
        components={"base": classifier, "autoencoder_1": ae_1,
                    "autoencoder_2": ae_2},
        config=config)
