"""Specialists+1 (Abbasi & Gagné 2017): an ensemble that rejects by doubt.

Abbasi & Gagné 2017, "Robustness to Adversarial Examples through an
Ensemble of Specialists", ICLR workshop (arXiv 1702.06856), Sec. 2-3:

- class sets (Sec. 2): from the generalist's confusion matrix, for each
  class i the set U_i holds i and the classes that take the top 80% of
  class i's misclassifications, and U_{K+i} is its complement; duplicate
  sets are merged (`class_sets_from_confusion`);
- members: one specialist per set, a classifier over ITS classes trained
  on images of those classes only, plus the generalist over all K classes
  ("+1"). Each member's logits are embedded into the K classes with -1e9
  outside its set (`EmbedClasses`), so its softmax is 0 there;
- vote (Algorithm 1, `SpecialistsVote`): if, for some class c, every
  member whose set holds c predicts c, only those members vote; otherwise
  all members vote. The output is the average of the voters' softmax
  outputs; the decision is its argmax, and the input is rejected when the
  average confidence in that class is low (`doubt = 1 - max_c p(c)` above
  a threshold).

The generalist holds every class and predicts exactly one, so at most one
class can be unanimous (it is the generalist's prediction); without a
generalist the lowest such class would win.

The system's `classifier` is `x -> log(p)` (its argmax is the vote), its
detector `x -> doubt` (column "specialists_confidence"), and
`components["members"]` / `arrays["class_sets"]` give the members' padded
logits `(batch, M, K)` and their bool sets `(M, K)` (member 0 is the
generalist) for the targeted attack of He et al. 2017 (arXiv 1706.04701,
Sec. 4; `attacks.specialists_targeted`); `components["base"]` is the
generalist alone.

Provenance: the 80% share, the complements, merged duplicates and the
vote (holders of a class unanimous, else all members; reject below a
confidence threshold) follow the paper's Sec. 2-3 and He et al.'s Sec. 4
summary of it. Three details are this implementation's reading, not
checked against the paper's full text: U_i contains i itself, the
confusion matrix is that of FGSM examples of training images
(`training.detection.specialists`), and the lowest class wins when several
are unanimous (possible only without a generalist).
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from models.detection.detection_system import DetectionSystem

PAPER = ("Abbasi & Gagné 2017, Robustness to Adversarial Examples through "
         "an Ensemble of Specialists (arXiv 1702.06856), Sec. 2-3, Alg. 1")
FILL = -1e9
MODES = ("probs", "log_probs", "doubt")


def class_sets_from_confusion(confusion: np.ndarray,
                              coverage: float = 0.8) -> np.ndarray:
    """The specialists' class sets from a confusion matrix (Sec. 2).

    For each class i (row i: true class i, column j: predicted j), the
    off-diagonal counts are sorted (largest first, ties by class index) and
    the fewest classes whose counts reach `coverage` of row i's
    misclassifications join i in U_i; the complement of U_i follows. Sets
    are ordered U_0..U_{K-1}, then the complements; a repeated set keeps
    its first place, and sets of fewer than 2 classes (a row without
    errors makes U_i = {i}) or of all K classes (the generalist's) are
    dropped, since they make no specialist.

    Args:
        confusion: non-negative `(K, K)` counts, K >= 2.
        coverage: fraction in (0, 1] of each row's misclassifications.

    Returns:
        bool `(S, K)`, one row per specialist, `S <= 2 K`.

    Raises:
        ValueError: a non-square, negative or non-finite `confusion`, or
            `coverage` outside (0, 1].
    """
    conf = np.asarray(confusion, np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1] or conf.shape[0] < 2:
        raise ValueError("confusion must be a square (K, K) matrix, K >= 2; "
                         f"got shape {conf.shape}")
    if not np.all(np.isfinite(conf)) or np.any(conf < 0):
        raise ValueError("confusion must hold finite counts >= 0")
    if not 0.0 < float(coverage) <= 1.0:
        raise ValueError(f"coverage must be in (0, 1]; got {coverage!r}")
    k = conf.shape[0]
    sets = []
    for i in range(k):
        row = conf[i].copy()
        row[i] = 0.0
        u = np.zeros(k, bool)
        u[i] = True
        total = row.sum()
        if total > 0:
            order = sorted(range(k), key=lambda j: (-row[j], j))
            cum = np.cumsum(row[order])
            # Smallest prefix whose share reaches the coverage.
            n = int(np.searchsorted(cum, coverage * total * (1 - 1e-12)))
            u[[j for j in order[:n + 1] if row[j] > 0]] = True
        sets.append(u)
    sets += [~u for u in sets]
    unique, seen = [], set()
    for u in sets:
        key = u.tobytes()
        if key not in seen and 2 <= u.sum() < k:
            seen.add(key)
            unique.append(u)
    return np.array(unique, bool).reshape(-1, k)


def _check_sets(class_sets) -> np.ndarray:
    sets = np.asarray(class_sets)
    if sets.ndim != 2 or sets.shape[0] < 1 or sets.shape[1] < 2 or \
            not np.isin(sets, (0, 1)).all() or not sets.any(axis=1).all():
        raise ValueError("class_sets must be a bool (M, K) table, K >= 2, "
                         "every row holding at least one class; got "
                         f"{np.asarray(class_sets).tolist()!r}")
    return sets.astype(bool)


@keras.saving.register_keras_serializable(package="robust_recipes")
class EmbedClasses(keras.layers.Layer):
    """Places a specialist's logits over its classes into all K classes.

    `out[:, classes[j]] = logits[:, j]`, and `-1e9` for every class outside
    `classes`, so that `softmax(out)` is the specialist's softmax embedded
    with exact zeros (Abbasi & Gagné 2017, Sec. 2).

    Threat model: `differentiable = True`, `randomized = False`.

    Args:
        classes: distinct ints in `[0, num_classes)`, the specialist's
            classes in the order of its logits.
        num_classes: K >= 2.

    Call arguments:
        inputs: float logits `(batch, len(classes))`.

    Returns:
        float32 `(batch, num_classes)`.

    Raises:
        ValueError: `classes` empty, repeated or out of range.
    """

    differentiable = True
    randomized = False

    def __init__(self, classes=(0,), num_classes=10, **kwargs):
        super().__init__(**kwargs)
        classes = [int(c) for c in classes]
        if not classes or len(set(classes)) != len(classes) or \
                min(classes) < 0 or max(classes) >= int(num_classes):
            raise ValueError(f"classes must be distinct ints in [0, "
                             f"{num_classes}); got {classes!r}")
        self.classes, self.num_classes = classes, int(num_classes)
        place = np.zeros((len(classes), self.num_classes), np.float32)
        place[np.arange(len(classes)), classes] = 1.0
        self._place = place
        self._fill = (FILL * (1.0 - place.sum(0))).astype(np.float32)

    def call(self, inputs):
        logits = ops.cast(inputs, "float32")
        return ops.matmul(logits, self._place) + self._fill

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes,
                "num_classes": self.num_classes}


def vote(member_logits, class_sets):
    """Algorithm 1 of Abbasi & Gagné 2017 on a batch (keras.ops).

    Args:
        member_logits: float `(batch, M, K)`; entries outside a member's
            set are ignored.
        class_sets: bool NumPy `(M, K)`.

    Returns:
        float32 `(batch, K)`: the average softmax output of the voters (the
        members holding the unanimous class, else all members).
    """
    sets = np.asarray(class_sets, np.float32)
    z = ops.where(sets[None] > 0, ops.cast(member_logits, "float32"), FILL)
    probs = ops.softmax(z, axis=-1)
    k = sets.shape[1]
    votes = ops.one_hot(ops.argmax(z, axis=-1), k)            # (B, M, K)
    agree = ops.sum(votes * sets[None], axis=1)               # (B, K)
    holders = np.sum(sets, axis=0)                            # (K,) float
    unanimous = ops.logical_and(ops.equal(agree, holders), holders > 0)
    winner = ops.argmax(ops.cast(unanimous, "float32"), axis=-1)
    found = ops.any(unanimous, axis=-1, keepdims=True)        # (B, 1)
    # Voters: members holding the winner, else everyone.
    weights = ops.where(found, ops.take(sets.T, winner, axis=0), 1.0)
    avg = ops.sum(weights[..., None] * probs, axis=1)
    return avg / ops.sum(weights, axis=1, keepdims=True)


@keras.saving.register_keras_serializable(package="robust_recipes")
class SpecialistsVote(keras.layers.Layer):
    """The Specialists+1 vote (`vote`, Abbasi & Gagné 2017, Alg. 1).

    Threat model: `differentiable = True` (chosen: the choice of voters is
    piecewise constant in the input and the average of their softmax
    outputs is smooth, so gradients exist almost everywhere, as through a
    max-pool) and `randomized = False`.

    Args:
        class_sets: bool `(M, K)` (nested lists), member m's classes.
        mode: "probs" (the averaged distribution `p`, `(batch, K)`),
            "log_probs" (`log p`, floored at 1e-30, `(batch, K)`: logits
            whose argmax is the vote) or "doubt" (`1 - max_c p(c)`,
            `(batch, 1)` in `[0, 1)`, higher = more adversarial).

    Call arguments:
        inputs: float member logits `(batch, M, K)`.

    Returns:
        float32, as `mode` says.

    Raises:
        ValueError: bad `class_sets` or `mode`.
    """

    differentiable = True
    randomized = False

    def __init__(self, class_sets=((True, True),), mode="probs", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        self.class_sets = _check_sets(class_sets)
        self.mode = mode

    def call(self, inputs):
        p = vote(inputs, self.class_sets)
        if self.mode == "log_probs":
            return ops.log(ops.maximum(p, 1e-30))
        if self.mode == "doubt":
            return 1.0 - ops.max(p, axis=-1, keepdims=True)
        return p

    def compute_output_shape(self, input_shape):
        k = self.class_sets.shape[1]
        return (input_shape[0], 1 if self.mode == "doubt" else k)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode,
                "class_sets": self.class_sets.tolist()}


def specialist_cnn(classes: Sequence[int], *, num_classes: int = 10,
                   input_shape: tuple[int, int, int] = (28, 28, 1),
                   width: int = 16, dense: int = 128,
                   name: str | None = None) -> keras.Model:
    """A small CNN specialist over `classes`, its logits placed in K.

    conv 3x3 `width` + ReLU, 2x2 max-pool, conv 3x3 `2 width` + ReLU, 2x2
    max-pool, dense `dense` + ReLU, dense `len(classes)`, `EmbedClasses`.
    (The paper's MNIST members are a larger CNN; this one is sized so that
    twenty train in minutes on a CPU.)

    Args:
        classes: the specialist's distinct classes in `[0, num_classes)`.
        num_classes: K.
        input_shape: `(height, width, channels)`.
        width, dense: layer sizes.
        name: model name.

    Returns:
        `keras.Model`: float32 images `(batch, H, W, C)` in `[0, 1]` ->
        float32 logits `(batch, num_classes)`, -1e9 outside `classes`.

    Raises:
        ValueError: bad `classes`.
    """
    classes = [int(c) for c in classes]
    embed = EmbedClasses(classes, num_classes, name="embed")
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((width, 2 * width), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(dense, activation="relu", name="fc")(x)
    x = keras.layers.Dense(len(classes), name="logits")(x)
    tag = "_".join(map(str, classes))
    return keras.Model(inputs, embed(x), name=name or f"specialist_{tag}")


def members_model(generalist: keras.Model,
                  specialists: Sequence[keras.Model]) -> keras.Model:
    """`x -> (batch, 1 + S, K)`: the generalist's logits then each
    specialist's padded logits, stacked on axis 1."""
    inputs = keras.Input(generalist.input_shape[1:], name="images")
    k = generalist.output_shape[-1]
    outs = [keras.layers.Reshape((1, k), name=f"member_{m}")(net(inputs))
            for m, net in enumerate([generalist, *specialists])]
    stacked = outs[0] if len(outs) == 1 else keras.layers.Concatenate(
        axis=1, name="stack")(outs)
    return keras.Model(inputs, stacked, name="members")


def specialists_system(classifier: keras.Model,
                       specialists: Sequence[keras.Model],
                       class_sets: np.ndarray, *,
                       config: dict | None = None) -> DetectionSystem:
    """Specialists+1 as an (uncalibrated) `DetectionSystem`.

    Args:
        classifier: the generalist, images float32 `(batch, H, W, C)` in
            `[0, 1]` -> logits `(batch, K)`.
        specialists: S models, images -> logits `(batch, K)` padded with
            -1e9 outside their classes (`specialist_cnn`).
        class_sets: bool `(S, K)`, the specialists' sets, in order.
        config: extra settings to record (merged into the system config).

    Returns:
        `DetectionSystem(kind="specialists")`: classifier `x -> log p`
        (the vote), one detector column "specialists_confidence" =
        `1 - max_c p(c)`, `components={"members": x -> (batch, 1 + S, K)
        logits, "base": the generalist (the undefended classifier that
        evaluation's naive attack targets)}`, `arrays={"class_sets": bool
        (1 + S, K)}` (row 0 the generalist's, all True).

    Raises:
        ValueError: `class_sets` not `(len(specialists), K)` bool.
    """
    k = classifier.output_shape[-1]
    sets = _check_sets(np.asarray(class_sets).reshape(-1, k)) \
        if len(specialists) else np.zeros((0, k), bool)
    if sets.shape != (len(specialists), k):
        raise ValueError(f"class_sets must be ({len(specialists)}, {k}); "
                         f"got {np.asarray(class_sets).shape}")
    all_sets = np.concatenate([np.ones((1, k), bool), sets])
    members = members_model(classifier, specialists)
    heads = {}
    for mode in ("log_probs", "doubt"):
        inputs = keras.Input(classifier.input_shape[1:], name="images")
        heads[mode] = keras.Model(inputs, SpecialistsVote(
            all_sets.tolist(), mode, name=f"vote_{mode}")(members(inputs)),
            name=f"specialists_{mode}")
    return DetectionSystem(
        "specialists", heads["log_probs"], heads["doubt"],
        ["specialists_confidence"],
        components={"members": members, "base": classifier},
        arrays={"class_sets": all_sets},
        config={"paper": PAPER, "members": int(len(all_sets)),
                "class_sets": [np.flatnonzero(s).tolist() for s in sets],
                **(config or {})})
