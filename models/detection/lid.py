"""LID detector: local intrinsic dimensionality of hidden activations.

Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle & Bailey 2018,
"Characterizing Adversarial Subspaces Using Local Intrinsic
Dimensionality", ICLR (arXiv 1801.02613):

- Sec. 3 (Eq. 3), the maximum-likelihood estimate of an input's LID from
  the distances `r_1 <= ... <= r_k` to its k nearest neighbours:
  `LID(x) = -((1/k) sum_i log(r_i / r_k))^-1`;
- Sec. 4 (Algorithm 1), one LID per layer of the classifier, the neighbours
  taken among a minibatch of clean images' activations (minibatch 100,
  k = 20 on MNIST in the authors' `extract_characteristics.py`), and a
  logistic regression on these features separating adversarial examples
  (positives) from clean and noisy ones (negatives).

Here the reference minibatch is FIXED: `reference_size` clean images chosen
at fit time, whose activations at each layer are stored as a non-trainable
weight, so the score of a single input is defined, deterministic and
differentiable (the paper draws a fresh minibatch per batch of inputs). The
logistic regression (fit by scikit-learn on standardized features) is
copied into a `Normalization` and a `Dense` layer: the detector maps images
to the regression's logit, one column "lid". Training is in
`training/detection/lid.py`.

Zero-distance rule: every reference activation at numerically zero
distance from the input's (squared distance at most `zero_rtol` times the
sum of their squared norms, both centred on the reference mean) is
excluded from the neighbours, so an input that belongs to the reference
batch is not its own nearest neighbour (the authors' code drops the first
neighbour of every point for the same reason).
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from models.detection.detection_system import DetectionSystem

PAPER = "Ma et al. 2018, LID, ICLR (arXiv 1801.02613)"
# Layers that only reshape, are the identity at inference, or rescale the
# input (LID is invariant to scaling and shifts): their LID (nearly)
# repeats the previous layer's.
_SKIPPED = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Dropout,
            keras.layers.InputLayer, keras.layers.Normalization,
            keras.layers.Rescaling)


@keras.saving.register_keras_serializable(package="robust_recipes")
class LocalIntrinsicDimensionality(keras.layers.Layer):
    """MLE of the LID of each input among a stored reference set (Ma et al.
    2018, arXiv 1801.02613, Sec. 3, Eq. 3).

    `LID = -1 / mean_i log(r_i / r_k)` over the k nearest reference points
    (Euclidean distance on flattened activations), after the zero-distance
    rule of the module doc. Distances come from the expansion
    `|a|^2 - 2 a.b + |b|^2` on vectors centred on the reference mean,
    floored at 1e-30; the mean log-ratio is capped at -1e-12 (at most
    k - 1 ties with r_k keep the estimate finite). If fewer than k
    reference points remain, the missing distances are 1e15.

    Threat model: `differentiable = True` (the neighbour selection is
    piecewise constant and the distances are differentiable: gradients
    flow through the selected distances), `randomized = False`.

    Args:
        k: neighbours, int >= 2 (the paper: 20).
        num_reference: reference points, int > k (the paper: 100).
        zero_rtol: relative tolerance of the zero-distance rule, >= 0.

    Call arguments:
        inputs: float32 `(batch, ...)` activations, same feature shape as
            the reference.

    Returns:
        float32 `(batch, 1)`, > 0.

    Raises:
        ValueError: bad `k`, `num_reference` or `zero_rtol`; a reference of
            the wrong shape (`set_reference`).
    """

    differentiable = True
    randomized = False

    def __init__(self, k=20, num_reference=100, zero_rtol=1e-5, **kwargs):
        super().__init__(**kwargs)
        # k = 1 makes the estimate -1 / log(r_1 / r_1): no estimate.
        for name, value, low in (("k", k, 2), ("num_reference",
                                                num_reference, 3)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got "
                                 f"{value!r}")
        if k >= num_reference:
            raise ValueError(f"k must be < num_reference ({num_reference}); "
                             f"got {k!r}")
        if not (isinstance(zero_rtol, (int, float)) and zero_rtol >= 0):
            raise ValueError(f"zero_rtol must be >= 0; got {zero_rtol!r}")
        self.k, self.num_reference = k, num_reference
        self.zero_rtol = float(zero_rtol)

    def build(self, input_shape):
        self.features = int(np.prod(input_shape[1:]))
        self.reference = self.add_weight(
            name="reference", shape=(self.num_reference, self.features),
            initializer="zeros", trainable=False)

    def set_reference(self, activations: Any) -> None:
        """Stores `activations` `(num_reference, ...)` as the reference."""
        ref = np.asarray(activations, np.float32).reshape(
            len(activations), -1)
        if ref.shape != (self.num_reference, self.features):
            raise ValueError(f"reference must have shape ({self.num_reference}"
                             f", {self.features}) when flattened; got "
                             f"{ref.shape}")
        self.reference.assign(ref)

    def call(self, inputs):
        a = ops.reshape(ops.cast(inputs, "float32"), (-1, self.features))
        ref = ops.convert_to_tensor(self.reference)
        mean = ops.mean(ref, axis=0, keepdims=True)
        a, ref = a - mean, ref - mean
        a2 = ops.sum(a * a, axis=1, keepdims=True)
        b2 = ops.expand_dims(ops.sum(ref * ref, axis=1), 0)
        d2 = ops.maximum(a2 + b2 - 2.0 * ops.matmul(a, ops.transpose(ref)),
                         0.0)
        d2 = ops.where(d2 <= self.zero_rtol * (a2 + b2), 1e30, d2)
        nearest = -ops.top_k(-d2, self.k, sorted=True)[0]  # ascending
        log_r2 = ops.log(ops.maximum(nearest, 1e-30))
        # log(r_i / r_k) = (log r_i^2 - log r_k^2) / 2
        mean_log = 0.5 * ops.mean(log_r2 - log_r2[:, -1:], axis=1)
        return ops.expand_dims(-1.0 / ops.minimum(mean_log, -1e-12), -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "k": self.k,
                "num_reference": self.num_reference,
                "zero_rtol": self.zero_rtol}


def default_layer_names(classifier: keras.Model) -> list[str]:
    """The input layer and every layer of `classifier` but Flatten,
    Reshape, Dropout, Normalization and Rescaling (whose LID repeats the
    previous one's): for the Madry CNN, the input, "conv1" (conv + ReLU),
    "pool1", "conv2", "pool2", "fc" (dense + ReLU), "logits". The authors'
    code takes the input and every layer's output (Ma et al. 2018, Sec.
    4)."""
    names = [classifier.layers[0].name] if isinstance(
        classifier.layers[0], keras.layers.InputLayer) else []
    return names + [layer.name for layer in classifier.layers
                    if not isinstance(layer, _SKIPPED)]


def _activations_model(classifier, layer_names):
    known = [layer.name for layer in classifier.layers]
    bad = [n for n in layer_names if n not in known]
    if bad or not layer_names:
        raise ValueError(f"layer_names must be non-empty names of the "
                         f"classifier's layers {known}; got {layer_names}")
    return keras.Model(classifier.inputs,
                       [classifier.get_layer(n).output for n in layer_names],
                       name="lid_activations")


def lid_feature_model(classifier: keras.Model, layer_names: Sequence[str],
                      reference_images: np.ndarray, k: int = 20,
                      zero_rtol: float = 1e-5) -> keras.Model:
    """Images -> LID per layer.

    Args:
        classifier: a Functional Keras model, float32 images
            `(batch, H, W, C)` in `[0, 1]` -> logits.
        layer_names: names of its layers (the input layer allowed).
        reference_images: float32 `(R, H, W, C)` clean images in `[0, 1]`,
            R > k (the paper: 100).
        k: neighbours (the paper: 20 on MNIST).
        zero_rtol: see `LocalIntrinsicDimensionality`.

    Returns:
        A `keras.Model` images -> float32 `(batch, len(layer_names))`, LIDs
        in the order of `layer_names`, named "lid_features".

    Raises:
        ValueError: an unknown layer name, reference images of another
            shape than the classifier's input, or `k >= R`.
    """
    layer_names = list(layer_names)
    acts = _activations_model(classifier, layer_names)
    shape = tuple(classifier.input_shape[1:])
    ref = np.asarray(reference_images, np.float32)
    if ref.shape[1:] != shape:
        raise ValueError(f"reference_images must have shape (R, *{shape}); "
                         f"got {ref.shape}")
    ref_acts = acts.predict(ref, batch_size=256, verbose=0)
    x = keras.Input(shape, name="image")
    outs = acts(x)
    if len(layer_names) == 1:
        outs, ref_acts = [outs], [ref_acts]
    columns = []
    for name, out, ref_act in zip(layer_names, outs, ref_acts):
        lid = LocalIntrinsicDimensionality(k, len(ref), zero_rtol,
                                           name=f"lid_{name}")
        columns.append(lid(out))
        lid.set_reference(ref_act)
    feats = columns[0] if len(columns) == 1 else \
        keras.layers.Concatenate(name="lids")(columns)
    return keras.Model(x, feats, name="lid_features")


def lid_system(classifier: keras.Model, layer_names: Sequence[str],
               reference_images: np.ndarray, k: int, scaler: Any,
               coef: Any, intercept: Any,
               zero_rtol: float = 1e-5) -> DetectionSystem:
    """Assembles the LID detector (uncalibrated) from its fitted parts.

    The detector is `x -> lid_feature_model(x) -> (f - mean) / scale ->
    f . coef + intercept`, the logistic regression's logit (scikit-learn's
    `decision_function`), float32 `(batch, 1)`, column "lid"; higher is
    more adversarial. The system's classifier is `classifier` itself.

    Args:
        classifier, layer_names, reference_images, k, zero_rtol: see
            `lid_feature_model`.
        scaler: a fitted `sklearn.preprocessing.StandardScaler` (anything
            with `mean_` and `scale_` of one value per layer).
        coef: the regression's coefficients, `(1, L)` or `(L,)`.
        intercept: its intercept, a scalar or `(1,)`.

    Returns:
        A `DetectionSystem` of kind "lid" with `arrays["reference_images"]`.

    Raises:
        ValueError: sizes of `scaler` / `coef` / `intercept` that do not
            match the L layers, or the errors of `lid_feature_model`.
    """
    layer_names = list(layer_names)
    n = len(layer_names)
    mean = np.asarray(scaler.mean_, np.float32).reshape(-1)
    scale = np.asarray(scaler.scale_, np.float32).reshape(-1)
    coef = np.asarray(coef, np.float32).reshape(-1)
    intercept = np.asarray(intercept, np.float32).reshape(-1)
    if not (len(mean) == len(scale) == len(coef) == n
            and len(intercept) == 1):
        raise ValueError(f"scaler and coef need one value per layer ({n}) "
                         f"and intercept one value; got {len(mean)}, "
                         f"{len(coef)}, {len(intercept)}")
    features = lid_feature_model(classifier, layer_names, reference_images,
                                 k, zero_rtol)
    x = keras.Input(tuple(classifier.input_shape[1:]), name="image")
    # StandardScaler: (f - mean_) / scale_; Normalization divides by
    # sqrt(variance), so variance = scale_**2 reproduces it.
    z = keras.layers.Normalization(mean=mean, variance=scale ** 2,
                                   name="standardize")(features(x))
    dense = keras.layers.Dense(1, name="lid")
    logit = dense(z)
    dense.set_weights([coef.reshape(n, 1), intercept])
    detector = keras.Model(x, logit, name="lid_detector")
    ref = np.asarray(reference_images, np.float32)
    config = {"paper": PAPER, "layer_names": layer_names, "k": int(k),
              "reference_size": int(len(ref)), "zero_rtol": float(zero_rtol),
              "score": "logistic-regression logit on standardized LIDs"}
    return DetectionSystem("lid", classifier, detector, ["lid"],
                           arrays={"reference_images": ref}, config=config)
