"""Feature squeezing as a detector (Xu, Evans & Qi 2018).

Xu, Evans & Qi 2018, "Feature Squeezing: Detecting Adversarial Examples in
Deep Neural Networks", NDSS (arXiv 1704.01155), Sec. 5: an input `x` is
scored by how much a squeezer moves the classifier's prediction,

    score_j(x) = || softmax(f(x)) - softmax(f(squeeze_j(x))) ||_1,

and the joint detector (Sec. 5.1) takes the maximum over the squeezers,
`score(x) = max_j score_j(x)`, rejecting above a threshold chosen on clean
validation images (5% false positives). The MNIST configuration (Table 3)
squeezes with 1-bit depth reduction and a 2x2 median filter; He et al. 2017
(arXiv 1706.04701, Sec. 5) attack each squeezer alone and the joint
detector, hence `squeezers=("bit_depth_1",)` / `("median_2x2",)`.

Squeezer names:

- `"bit_depth_<b>"`, b in 1..8: `layers.BitDepthReduction(bits=b)` (not
  differentiable: attacked through BPDA);
- `"median_<h>x<w>"`: `layers.MedianSmoothing2D((h, w))` with the border
  handling of the authors' code (EvadeML-Zoo, `utils/squeeze.py`: scipy's
  `median_filter(mode="reflect")`, which REPEATS the edge pixel). The layer
  itself pads numpy-"reflect" style (edge not repeated), so the image is
  first padded here by edge-repeating `SymmetricPad2D` and the result
  cropped back; the window placement (for 2x2, the pixel and its upper,
  left and upper-left neighbours) and the rank (upper median, element 2 of
  4) are scipy's in both.
"""

from __future__ import annotations

import re
from typing import Sequence

import keras
from keras import ops

from layers.squeezers import BitDepthReduction, MedianSmoothing2D
from models.detection.detection_system import DetectionSystem

PAPER = ("Xu, Evans & Qi 2018, Feature Squeezing (NDSS, arXiv 1704.01155), "
         "Sec. 5 joint detection, MNIST squeezers of Table 3")
MNIST_SQUEEZERS = ("bit_depth_1", "median_2x2")
_BIT = re.compile(r"bit_depth_([1-8])")
_MEDIAN = re.compile(r"median_([1-9][0-9]*)x([1-9][0-9]*)")


@keras.saving.register_keras_serializable(package="robust_recipes")
class SymmetricPad2D(keras.layers.Layer):
    """Pads height and width by mirroring WITH the edge pixel repeated
    (numpy's `"symmetric"`, scipy's `"reflect"`: `b a | a b c | c b`).

    Threat model: `differentiable = True`, `randomized = False`.

    Args:
        padding: `((top, bottom), (left, right))`, ints >= 0, each smaller
            than or equal to the image side.

    Call arguments:
        inputs: float32 `(batch, height, width, channels)`.

    Returns:
        float32 `(batch, height + top + bottom, width + left + right,
        channels)`.

    Raises:
        ValueError: `padding` not two pairs of ints >= 0.
    """

    differentiable = True
    randomized = False

    def __init__(self, padding=((0, 0), (0, 0)), **kwargs):
        super().__init__(**kwargs)
        try:
            pads = tuple(tuple(int(p) for p in pair) for pair in padding)
            ok = len(pads) == 2 and all(len(p) == 2 and min(p) >= 0
                                        for p in pads)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError("padding must be ((top, bottom), (left, right)) "
                             f"ints >= 0; got {padding!r}")
        self.padding = pads

    def call(self, inputs):
        (top, bottom), (left, right) = self.padding
        return ops.pad(ops.cast(inputs, "float32"),
                       [[0, 0], [top, bottom], [left, right], [0, 0]],
                       mode="symmetric")

    def compute_output_shape(self, input_shape):
        (top, bottom), (left, right) = self.padding
        b, h, w, c = input_shape
        return (b, None if h is None else h + top + bottom,
                None if w is None else w + left + right, c)

    def get_config(self):
        return {**super().get_config(),
                "padding": [list(p) for p in self.padding]}


@keras.saving.register_keras_serializable(package="robust_recipes")
class SoftmaxL1Distance(keras.layers.Layer):
    """`sum_k |softmax(a)_k - softmax(b)_k|` per example (Xu et al. 2018,
    Sec. 5, the L1 distance between two prediction vectors).

    Threat model: `differentiable = True`, `randomized = False`.

    Call arguments:
        inputs: a list `[a, b]` of float logits `(batch, classes)`.

    Returns:
        float32 `(batch, 1)`, values in `[0, 2]`.
    """

    differentiable = True
    randomized = False

    def call(self, inputs):
        a, b = (ops.softmax(ops.cast(t, "float32"), axis=-1) for t in inputs)
        return ops.sum(ops.abs(a - b), axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)


def squeezer_layers(name: str) -> list[keras.layers.Layer]:
    """The layers of one named squeezer (module doc), applied in order.

    Raises:
        ValueError: an unknown name.
    """
    bit = _BIT.fullmatch(str(name))
    if bit:
        return [BitDepthReduction(bits=int(bit.group(1)),
                                  name=f"squeeze_{name}")]
    med = _MEDIAN.fullmatch(str(name))
    if med:
        kh, kw = int(med.group(1)), int(med.group(2))
        # scipy origin 0: k // 2 pixels before, the rest after.
        pads = ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2))
        return [SymmetricPad2D(pads, name=f"pad_{name}"),
                MedianSmoothing2D((kh, kw), name=f"squeeze_{name}"),
                keras.layers.Cropping2D(pads, name=f"crop_{name}")]
    raise ValueError(f"unknown squeezer {name!r}; accepted: 'bit_depth_<b>' "
                     "(b in 1..8) or 'median_<h>x<w>', e.g. "
                     f"{MNIST_SQUEEZERS}")


def squeeze(x, name: str):
    """Applies the named squeezer to images `x` float32 `(batch, H, W, C)`
    in `[0, 1]`; returns the squeezed images, same shape, in `[0, 1]`."""
    for layer in squeezer_layers(name):
        x = layer(x)
    return x


def feature_squeezing_detector(classifier: keras.Model,
                               squeezers: Sequence[str] = MNIST_SQUEEZERS,
                               *, name: str = "feature_squeezing"
                               ) -> keras.Model:
    """The functional model `x -> max_j L1(softmax f(x), softmax f(s_j(x)))`.

    Args:
        classifier: images float32 `(batch, H, W, C)` in `[0, 1]` -> logits
            `(batch, classes)`; reused (shared weights) for every branch.
        squeezers: one or more squeezer names (module doc).
        name: the model's name.

    Returns:
        `keras.Model`, the images -> float32 scores `(batch, 1)` in
        `[0, 2]`.

    Raises:
        ValueError: an empty, repeated or unknown squeezer.
    """
    squeezers = list(squeezers) if not isinstance(squeezers, str) \
        else [squeezers]
    if not squeezers or len(set(squeezers)) != len(squeezers):
        raise ValueError("squeezers must be a non-empty list of distinct "
                         f"names such as {MNIST_SQUEEZERS}; got {squeezers!r}")
    for s in squeezers:
        squeezer_layers(s)  # validates every name before building
    inputs = keras.Input(classifier.input_shape[1:], name="images")
    logits = classifier(inputs)
    scores = [SoftmaxL1Distance(name=f"l1_{s}")(
        [logits, classifier(squeeze(inputs, s))]) for s in squeezers]
    out = scores[0] if len(scores) == 1 else keras.layers.Maximum(
        name="joint_max")(scores)
    return keras.Model(inputs, out, name=name)


def feature_squeezing_system(classifier: keras.Model,
                             squeezers: Sequence[str] = MNIST_SQUEEZERS,
                             *, name: str = "feature_squeezing"
                             ) -> DetectionSystem:
    """Feature squeezing as an (uncalibrated) `DetectionSystem`.

    The system's classifier is `classifier` itself (squeezing only
    detects); its detector has ONE column, `name`: the maximum over
    `squeezers` of the L1 distance between the softmax outputs on `x` and
    on the squeezed `x` (Xu et al. 2018, Sec. 5.1; a single squeezer gives
    that squeezer's own detector).

    Args:
        classifier: images float32 `(batch, H, W, C)` in `[0, 1]` -> logits
            `(batch, classes)`.
        squeezers: squeezer names; the paper's MNIST joint detector by
            default, `("bit_depth_1",)` or `("median_2x2",)` alone.
        name: the detector column's name.

    Returns:
        `DetectionSystem(kind="feature_squeezing")`; `calibrate` it on
        held-out clean images (the paper: 5% false positives).

    Raises:
        ValueError: an empty, repeated or unknown squeezer.
    """
    squeezers = [squeezers] if isinstance(squeezers, str) else list(squeezers)
    detector = feature_squeezing_detector(classifier, squeezers,
                                          name=f"{name}_detector")
    return DetectionSystem(
        "feature_squeezing", classifier, detector, [name],
        config={"paper": PAPER, "squeezers": squeezers,
                "score": "max over squeezers of L1(softmax(f(x)), "
                         "softmax(f(squeeze(x))))",
                "median_border": "scipy reflect (edge repeated), as the "
                                 "authors' EvadeML-Zoo code"})
