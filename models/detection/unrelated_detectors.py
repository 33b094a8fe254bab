"""The ensemble of three unrelated detectors of He et al. 2017.

He, Wei, Chen, Carlini & Song 2017, "Adversarial Example Defenses: Ensembles
of Weak Defenses are not Strong" (arXiv 1706.04701, WOOT '17), the section
on combining unrelated detectors: three detectors proposed independently,
each already broken alone by Carlini & Wagner 2017 (arXiv 1705.07263), are
run side by side on MNIST, and an input is rejected when ANY of them flags
it. The members, one detector column each (higher = more adversarial):

- "gong": a binary classifier on the input image, clean (0) vs adversarial
  (1) (Gong, Wang & Ku 2017, "Adversarial and Clean Data Are Not Twins",
  arXiv 1704.04960). Score: its logit. The architecture here is a compact
  CNN of our own (`gong_binary_cnn`), not the paper's.
- "metzen": a small detector subnetwork attached to an inner feature map of
  the (frozen) classifier (Metzen, Genewein, Fischer & Bischoff 2017, "On
  Detecting Adversarial Perturbations", ICLR, arXiv 1702.04267, Fig. 1:
  conv 96 - max-pool - conv 192 - max-pool - conv 192 - conv 2 -
  global average pooling; the max-pools are dropped at the deeper attachment
  points). Here it reads the Madry CNN's second conv block ("pool2",
  7x7x64) with one max-pool (Metzen et al. skip the second one at their
  deeper position AD(3)), has no batch normalization, and ends in one logit
  instead of two softmax units (the same classifier: the logit is their
  difference). Score: its logit.
- "kde": Gaussian kernel density of the classifier's last hidden layer
  ("fc", 1024 ReLU units in the Madry CNN) under the training points of the
  PREDICTED class (Feinman, Curtin, Shintre & Gardner 2017, "Detecting
  Adversarial Samples from Artifacts", arXiv 1703.00410, the density
  estimate `K(x)` of their artifacts section), bandwidth 1.20 as tuned for
  MNIST in their code (`BANDWIDTHS`). Score: the negative log-density
  (`KernelDensityScore`).

`unrelated_detectors_system` assembles the uncalibrated `DetectionSystem`;
training (adversarial examples, fitting the two networks, choosing the KDE
reference points) is `training.detection.unrelated_detectors`.

Every detector is a deterministic, differentiable function of the image
written in `keras.ops`, so a joint-loss adaptive attack can differentiate the
whole ensemble, as He et al. do (the KDE's choice of class by the argmax of
the logits is piecewise constant and passes no gradient).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from models.detection.detection_system import DetectionSystem

KIND = "unrelated_detectors"
NAMES = ("gong", "metzen", "kde")
PAPER = ("He, Wei, Chen, Carlini & Song 2017, arXiv 1706.04701 (combining "
         "unrelated detectors): Gong et al. 2017 (arXiv 1704.04960), Metzen "
         "et al. 2017 (arXiv 1702.04267), Feinman et al. 2017 (arXiv "
         "1703.00410)")
# Feinman et al.'s KDE bandwidth for MNIST (their code's BANDWIDTHS table,
# tuned by cross-validation on their own network's last hidden layer).
MNIST_BANDWIDTH = 1.20
# Metzen et al., Fig. 1 (bottom): the detector's convolution widths.
METZEN_FILTERS = (96, 192, 192)
# Masked-out kernel terms; finite so that an empty class cannot give NaN.
_MASKED = -1e30


@keras.saving.register_keras_serializable(package="robust_recipes")
class KernelDensityScore(keras.layers.Layer):
    """Negative log Gaussian kernel density under the predicted class.

    For hidden features `z` (one row) and logits with predicted class
    `c = argmax(logits)`, with reference features `z_i` of class `y_i` and
    `n_c` reference points in class `c`:

        score = -log( 1/n_c * sum_{i : y_i = c} N(z; z_i, h^2 I) )
              = -logsumexp_{i : y_i = c}(-||z - z_i||^2 / (2 h^2))
                + log n_c + (D / 2) log(2 pi h^2),

    which is `-KernelDensity(kernel="gaussian", bandwidth=h).fit(Z_c)
    .score_samples(z)` of scikit-learn, what Feinman et al.'s code computes
    (the paper writes the kernel as `exp(-||z - z_i||^2 / sigma^2)`; the
    constant factor is absorbed by the threshold). Higher = lower density =
    more adversarial. Squared distances use `||z||^2 - 2 z.z_i + ||z_i||^2`
    (clipped at 0), so memory is `(batch, points)`, not `(batch, points,
    D)`.

    The reference set lives in two non-trainable weights set by
    `set_reference`: "reference_features" float32 `(points, D)` and
    "reference_labels" float32 one-hot `(points, classes)`; they are saved
    with the model.

    Threat model: `differentiable = True` (the score is smooth in `z`; the
    class choice by argmax is piecewise constant, with zero gradient, as in
    Carlini & Wagner's attack on it, arXiv 1705.07263) and
    `randomized = False`.

    Args:
        points: number of reference points, >= 1.
        num_classes: number of classes (the logits' width), >= 1.
        bandwidth: the Gaussian kernel's standard deviation h, > 0, in
            feature units (1.20: Feinman et al.'s MNIST setting).
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: a list `[features, logits]`: float32 `(batch, D)` hidden
            features and float32 `(batch, num_classes)` logits.

    Returns:
        float32 `(batch, 1)`: the negative log-density.

    Raises:
        ValueError: `points` or `num_classes` not an int >= 1, or
            `bandwidth` not a positive finite number.

    Example:
        >>> kde = KernelDensityScore(points=5000, num_classes=10)
        >>> score = kde([hidden, logits])        # builds the weights
        >>> kde.set_reference(train_hidden, train_labels)
    """

    differentiable = True
    randomized = False

    def __init__(self, points: int, num_classes: int,
                 bandwidth: float = MNIST_BANDWIDTH, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("points", points), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(
                    value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        if isinstance(bandwidth, bool) or not isinstance(
                bandwidth, (int, float, np.floating, np.integer)) or not (
                math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError("bandwidth must be a positive finite number; "
                             f"got {bandwidth!r}")
        self.points = int(points)
        self.num_classes = int(num_classes)
        self.bandwidth = float(bandwidth)

    def build(self, input_shape):
        features_shape = input_shape[0]
        dim = features_shape[-1]
        if dim is None:
            raise ValueError("KernelDensityScore needs a known feature size; "
                             f"got features of shape {features_shape}")
        self.reference_features = self.add_weight(
            name="reference_features", shape=(self.points, int(dim)),
            initializer="zeros", trainable=False)
        self.reference_labels = self.add_weight(
            name="reference_labels", shape=(self.points, self.num_classes),
            initializer="zeros", trainable=False)

    def set_reference(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Stores the reference set (the layer must be built).

        Args:
            features: float `(points, D)`, finite.
            labels: int `(points,)` in `[0, num_classes)`; every class needs
                at least one point.

        Raises:
            ValueError: wrong shapes, non-finite features, labels out of
                range or a class without points.
        """
        features = np.asarray(features, np.float32)
        labels = np.asarray(labels)
        want = tuple(self.reference_features.shape)
        if features.shape != want:
            raise ValueError(f"reference features must have shape {want}; "
                             f"got {features.shape}")
        if not np.all(np.isfinite(features)):
            raise ValueError("reference features must be finite")
        if labels.shape != (self.points,) or not np.issubdtype(
                labels.dtype, np.integer):
            raise ValueError(f"reference labels must be ints of shape "
                             f"({self.points},); got {labels.dtype} "
                             f"{labels.shape}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"reference labels must be in [0, "
                             f"{self.num_classes}); got "
                             f"[{labels.min()}, {labels.max()}]")
        counts = np.bincount(labels, minlength=self.num_classes)
        if np.any(counts == 0):
            raise ValueError("every class needs a reference point; classes "
                             f"{np.flatnonzero(counts == 0).tolist()} have "
                             "none")
        self.reference_features.assign(features)
        self.reference_labels.assign(
            np.eye(self.num_classes, dtype=np.float32)[labels])

    def call(self, inputs):
        features, logits = inputs
        z = ops.cast(features, "float32")
        ref = ops.convert_to_tensor(self.reference_features)
        onehot = ops.convert_to_tensor(self.reference_labels)
        sq = (ops.sum(z * z, axis=-1, keepdims=True)
              - 2.0 * ops.matmul(z, ops.transpose(ref))
              + ops.sum(ref * ref, axis=-1)[None, :])
        log_kernel = -ops.maximum(sq, 0.0) / (2.0 * self.bandwidth ** 2)
        pred = ops.one_hot(ops.argmax(logits, axis=-1), self.num_classes,
                           dtype="float32")
        member = ops.matmul(pred, ops.transpose(onehot))  # (batch, points)
        masked = ops.where(member > 0.5, log_kernel, _MASKED)
        count = ops.sum(pred * ops.sum(onehot, axis=0)[None, :], axis=-1)
        dim = int(self.reference_features.shape[-1])
        norm = 0.5 * dim * math.log(2.0 * math.pi * self.bandwidth ** 2)
        log_density = (ops.logsumexp(masked, axis=-1)
                       - ops.log(ops.maximum(count, 1.0)) - norm)
        return ops.expand_dims(-log_density, -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        config = super().get_config()
        config.update({"points": self.points,
                       "num_classes": self.num_classes,
                       "bandwidth": self.bandwidth})
        return config


def _check_width(width, what):
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"{what} must be an int >= 1; got {width!r}")


def gong_binary_cnn(input_shape: Sequence[int] = (28, 28, 1), *,
                    width: int = 16, hidden: int = 128) -> keras.Model:
    """The input binary classifier of Gong et al. 2017 (arXiv 1704.04960).

    A compact CNN of our own (Gong et al.'s exact MNIST topology is not
    followed): conv 5x5 `width` + ReLU, 2x2 max-pool, conv 5x5 `2 * width` +
    ReLU, 2x2 max-pool, dense `hidden` + ReLU, dense 1.

    Args:
        input_shape: `(H, W, C)` of the images.
        width: filters of the first conv, >= 1.
        hidden: units of the hidden dense layer, >= 1.

    Returns:
        A Functional model: float32 images `(batch, H, W, C)` in `[0, 1]` ->
        float32 logits `(batch, 1)`, positive = adversarial.

    Raises:
        ValueError: `width` or `hidden` not an int >= 1.
    """
    _check_width(width, "width")
    _check_width(hidden, "hidden")
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for i, filters in enumerate((width, 2 * width), start=1):
        x = keras.layers.Conv2D(filters, 5, padding="same",
                                activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(hidden, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name="gong_detector")


def metzen_detector_head(input_shape: Sequence[int], *,
                         filters: Sequence[int] = METZEN_FILTERS,
                         pools: int = 1) -> keras.Model:
    """The detector subnetwork of Metzen et al. 2017 (arXiv 1702.04267).

    Fig. 1 (bottom) of the paper: conv 3x3 `filters[0]` + ReLU, max-pool,
    conv 3x3 `filters[1]` + ReLU, max-pool, conv 3x3 `filters[2]` + ReLU,
    conv 1x1 to one logit, global average pooling; only the first `pools`
    of the two 2x2 max-pools are kept (the paper drops the second at its
    position AD(3) and both at AD(4)). No batch normalization.

    Args:
        input_shape: `(h, w, c)` of the classifier feature map it reads.
        filters: three conv widths, ints >= 1 (96, 192, 192 in the paper).
        pools: 0, 1 or 2 max-pools.

    Returns:
        A Functional model: float32 feature maps `(batch, h, w, c)` ->
        float32 logits `(batch, 1)`, positive = adversarial.

    Raises:
        ValueError: `filters` not three ints >= 1, or `pools` not 0, 1, 2.
    """
    filters = tuple(filters)
    if len(filters) != 3:
        raise ValueError(f"filters must be three ints; got {filters!r}")
    for f in filters:
        _check_width(f, "each of filters")
    if pools not in (0, 1, 2) or isinstance(pools, bool):
        raise ValueError(f"pools must be 0, 1 or 2; got {pools!r}")
    inputs = keras.Input(tuple(input_shape), name="features")
    x = inputs
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu",
                                name=f"det_conv{i + 1}")(x)
        if i < pools:
            x = keras.layers.MaxPooling2D(2, padding="same",
                                          name=f"det_pool{i + 1}")(x)
    x = keras.layers.Conv2D(1, 1, name="det_logit_map")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="det_gap")(x)
    return keras.Model(inputs, outputs, name="metzen_head")


def _layer_output(classifier: keras.Model, name: str):
    try:
        return classifier.get_layer(name).output
    except ValueError:
        names = [layer.name for layer in classifier.layers]
        raise ValueError(f"classifier has no layer {name!r}; its layers are "
                         f"{names}") from None


def feature_model(classifier: keras.Model, layer_names: Sequence[str],
                  name: str = "classifier_features") -> keras.Model:
    """The classifier's own layers up to the named ones, sharing weights.

    Args:
        classifier: a Functional Keras model, images -> logits.
        layer_names: names of its layers whose outputs to return (e.g.
            "pool2" and "fc" for `models.madry_cnn`).

    Returns:
        A Functional model: the classifier's input -> the list of those
        layers' outputs (one tensor when one name is given).

    Raises:
        ValueError: a name that is not a layer of `classifier` (the message
            lists its layers).
    """
    outputs = [_layer_output(classifier, n) for n in layer_names]
    return keras.Model(classifier.inputs,
                       outputs if len(outputs) > 1 else outputs[0],
                       name=name)


def metzen_detector(classifier: keras.Model, head: keras.Model,
                    layer: str = "pool2") -> keras.Model:
    """The Metzen detector on images: the classifier's layers up to `layer`
    followed by `head` (images `(batch, H, W, C)` in `[0, 1]` -> float32
    logits `(batch, 1)`). Shares weights with `classifier` and `head`.

    Raises:
        ValueError: `layer` not in `classifier`, or `head` expecting another
            feature shape.
    """
    trunk = feature_model(classifier, [layer], name="metzen_trunk")
    _check_head(head, trunk.output.shape, layer)
    inputs = keras.Input(classifier.input_shape[1:], name="image")
    return keras.Model(inputs, head(trunk(inputs)), name="metzen_detector")


def _check_head(head, feature_shape, layer):
    want = tuple(feature_shape[1:])
    got = tuple(head.input_shape[1:])
    if got != want:
        raise ValueError(f"the Metzen head takes features {got} but layer "
                         f"{layer!r} gives {want}")


def _check_parts(gong, metzen, kde_features, image_shape, inner_shape,
                 hidden_shape, metzen_layer, kde_layer):
    """`kde_features` as float32 `(points, D)`.

    Raises:
        ValueError: a head, detector or feature array of the wrong shape.
    """
    _check_head(metzen, inner_shape, metzen_layer)
    if tuple(gong.input_shape[1:]) != image_shape or \
            tuple(gong.output_shape[1:]) != (1,):
        raise ValueError(f"gong must map images {image_shape} to one logit; "
                         f"got {gong.input_shape} -> {gong.output_shape}")
    if tuple(metzen.output_shape[1:]) != (1,):
        raise ValueError(f"the Metzen head must output one logit; got "
                         f"{metzen.output_shape}")
    if len(hidden_shape) != 2:
        raise ValueError(f"kde_layer {kde_layer!r} must give flat features "
                         f"(batch, D); got {tuple(hidden_shape)}")
    kde_features = np.asarray(kde_features, np.float32)
    if kde_features.ndim != 2:
        raise ValueError("kde_features must be (points, D); got shape "
                         f"{kde_features.shape}")
    return kde_features


def unrelated_detectors_system(
    classifier: keras.Model,
    gong: keras.Model,
    metzen: keras.Model,
    kde_features: np.ndarray,
    kde_labels: np.ndarray,
    bandwidth: float = MNIST_BANDWIDTH,
    *,
    metzen_layer: str = "pool2",
    kde_layer: str = "fc",
    config: Mapping[str, Any] | None = None,
) -> DetectionSystem:
    """Assembles He et al.'s ensemble of three unrelated detectors.

    The detector model maps images to three columns, in this order:
    "gong" = `gong(x)`, "metzen" = `metzen(classifier[metzen_layer](x))`,
    "kde" = `KernelDensityScore` of `classifier[kde_layer](x)` under the
    class `argmax classifier(x)`; all higher = more adversarial. The system
    is uncalibrated (`calibrate` it on held-out clean images).

    Args:
        classifier: Functional Keras model, float32 images `(batch, H, W,
            C)` in `[0, 1]` -> logits `(batch, classes)`; it keeps its
            weights (nothing is trained here).
        gong: Keras model, the same images -> logits `(batch, 1)`.
        metzen: the Metzen head, Keras model, the feature map of
            `metzen_layer` -> logits `(batch, 1)`.
        kde_features: float `(points, D)`: `classifier[kde_layer]` features
            of training images (a subsample; stored in the detector).
        kde_labels: int `(points,)`: their true labels in `[0, classes)`,
            every class present.
        bandwidth: the KDE bandwidth, > 0 (Feinman et al.'s MNIST 1.20).
        metzen_layer: the classifier layer the Metzen head reads ("pool2",
            the Madry CNN's second conv block).
        kde_layer: the classifier's last hidden layer ("fc").
        config: extra JSON-serializable settings to record.

    Returns:
        An uncalibrated `DetectionSystem` of kind "unrelated_detectors" with
        names `("gong", "metzen", "kde")`.

    Raises:
        ValueError: a layer name not in `classifier`, a detector with the
            wrong input or output shape, a bad bandwidth, or KDE reference
            data of the wrong shape, non-finite, with labels out of range or
            a class without points.
    """
    image_shape = tuple(classifier.input_shape[1:])
    num_classes = int(classifier.output_shape[-1])
    inner_out = _layer_output(classifier, metzen_layer)
    hidden_out = _layer_output(classifier, kde_layer)
    # One pass through the classifier gives all three tensors.
    trunk = keras.Model(classifier.inputs,
                        [inner_out, hidden_out, classifier.outputs[0]],
                        name="classifier_features")
    inner_shape, hidden_shape = inner_out.shape, hidden_out.shape
    kde_features = _check_parts(gong, metzen, kde_features, image_shape,
                                inner_shape, hidden_shape, metzen_layer,
                                kde_layer)

    inputs = keras.Input(image_shape, name="image")
    inner, hidden, logits = trunk(inputs)
    kde = KernelDensityScore(len(kde_features), num_classes, bandwidth,
                             name="kde")
    columns = [gong(inputs), metzen(inner), kde([hidden, logits])]
    kde.set_reference(kde_features, kde_labels)
    counts = np.bincount(np.asarray(kde_labels), minlength=num_classes)
    scores = keras.layers.Concatenate(axis=-1, name="scores")(columns)
    detector = keras.Model(inputs, scores, name="unrelated_detectors")
    return DetectionSystem(KIND, classifier, detector, NAMES,
                           config=_settings(metzen_layer, kde_layer,
                                            bandwidth, counts, config))


def _settings(metzen_layer, kde_layer, bandwidth, counts, config):
    """The system's `config`: paper, members and KDE settings, then
    `config`."""
    settings = {
        "paper": PAPER,
        "members": {
            "gong": "binary CNN on the image (Gong et al. 2017)",
            "metzen": f"detector subnetwork on {metzen_layer!r} "
                      "(Metzen et al. 2017)",
            "kde": f"Gaussian KDE on {kde_layer!r}, predicted class "
                   "(Feinman et al. 2017)"},
        "metzen_layer": metzen_layer,
        "kde_layer": kde_layer,
        "bandwidth": float(bandwidth),
        "kde_points_per_class": counts.tolist(),
    }
    settings.update(config or {})
    return settings
