"""The joint-loss attack on a classifier guarded by detectors.

He, Wei, Chen, Carlini & Song 2017 ("Adversarial Example Defenses:
Ensembles of Weak Defenses are not Strong", arXiv 1706.04701, Sec. 3-5) and
Carlini & Wagner 2017 ("Adversarial Examples Are Not Easily Detected",
arXiv 1705.07263, Sec. 4-5; "MagNet and 'Efficient Defenses ...' Are Not
Robust", arXiv 1711.08478) break detection defenses by one minimum-L2
optimization against the whole system: misclassify, keep every detector's
score under its threshold, and stay close. With `x' = (tanh(w) + 1) / 2`
(the C&W change of variables, so `x'` stays in `[0, 1]`) it minimises over
`w`

    ||x' - x||_2^2 + c * ( f(x') + sum_d max((s_d(x') - t_d) / sigma_d
                                            + margin, 0) )

where `f` is C&W's margin loss on the system's logits (untargeted: `max(Z_y
- max_{i != y} Z_i, -kappa)`; targeted: `max(max_{i != t} Z_i - Z_t,
-kappa)`), `s_d` the detector scores, `t_d` their thresholds and `sigma_d`
their clean-score spreads (`DetectionSystem.scales`), so that detectors of
different units weigh alike. Adam runs `steps` iterations per value of `c`,
with C&W's per-example binary search on `c`; the smallest-L2 point seen
that is misclassified (by margin `kappa`) AND accepted by every detector
is kept.

The threat model is read from the layers (`attacks.adaptive`): gradients
come from the differentiable branches, BPDA (exact forward, identity or
surrogate backward) stands in for the non-differentiable ones (feature
squeezing's bit-depth reduction), EOT averages randomized ones; with
`restarts > 1` each restart starts from a random point near `x`
(He et al. use random starts). Candidates are finally re-tested on the
full system (exact forward pass, the expected prediction for a randomized
one), so a reported success is one the defended system really makes.

`members` mode (`specialists_targeted`) replaces `f` by the sum of the
targeted margin losses of several classifiers.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from attacks import primitives
from attacks._registry import register_system_attack
from attacks.adaptive import adaptive_model
from attacks.cw import adam_update
from core import backends

_UPPER_INIT = 1e10


class _Joint(keras.layers.Layer):
    """`x -> concat(classifier(x) flattened, detector(x))` as one Keras
    layer, so the attack loop compiles once (JAX) and BPDA / EOT wrap both
    branches together."""

    def __init__(self, attack_model):
        super().__init__(name="joint_attack_model", autocast=False)
        self.attack_model = attack_model
        # Tracks the Keras model inside an EOT wrapper, so a compiled loop
        # reads its weights live (core.backends.compile_fn).
        inner = getattr(attack_model, "wrapped", attack_model)
        if isinstance(inner, keras.layers.Layer):
            self.inner = inner

    def call(self, x, training=False):
        del training
        return self.attack_model(x)


def joint_model(classifier: keras.Model, detector: keras.Model
                ) -> keras.Model:
    """The functional model `x -> concat(flatten(classifier(x)),
    detector(x))`, float32 `(batch, K + D)`."""
    inputs = keras.Input(classifier.input_shape[1:])
    logits = keras.layers.Flatten()(classifier(inputs))
    return keras.Model(inputs, keras.layers.Concatenate()(
        [logits, detector(inputs)]), name="joint")


def _objective(model, x, y, w, const, thresholds, scales, class_sets, *,
               kappa, margin, targeted, num_logits, members):
    x_adv = primitives.from_tanh_space(w, 0.0, 1.0)
    l2sq = ops.sum(ops.square(x_adv - x), axis=(1, 2, 3))
    out = ops.cast(model(x_adv), "float32")
    scores = out[:, num_logits:]
    over = (scores - thresholds) / scales
    f_det = ops.sum(ops.relu(over + margin), axis=-1)
    accepted = ops.all(scores <= thresholds, axis=-1)
    if members:
        # (batch, M, C) member logits; the loss sums the targeted margins
        # of the members whose class set holds the target y.
        classes = ops.shape(class_sets)[-1]
        logits = ops.reshape(out[:, :num_logits], (-1, num_logits // classes,
                                                   classes))
        onehot = ops.one_hot(y, classes, dtype="float32")[:, None, :]
        masked = ops.where(class_sets[None] > 0, logits, -1e9)
        z_t = ops.sum(onehot * masked, axis=-1)
        z_other = ops.max(masked - 1e9 * onehot, axis=-1)
        holds = ops.sum(onehot * class_sets[None], axis=-1)
        gap = z_other - z_t
        f_cls = ops.sum(holds * ops.maximum(gap, -kappa), axis=-1)
        hit = ops.all(ops.logical_or(holds < 0.5, -gap >= kappa), axis=-1)
    else:
        logits = out[:, :num_logits]
        z_y, z_other = primitives.logit_margins(logits, y)
        gap = (z_other - z_y) if targeted else (z_y - z_other)
        f_cls = ops.maximum(gap, -kappa)
        pred = ops.cast(ops.argmax(logits, axis=-1), "int32")
        wins = ops.equal(pred, y) if targeted else ops.not_equal(pred, y)
        hit = ops.logical_and(wins, -gap >= kappa)
    succ = ops.logical_and(hit, accepted)
    return x_adv, l2sq, f_cls + f_det, succ


def _keep(best_x, best_l2, x_adv, l2sq, succ):
    take = ops.logical_and(succ, l2sq < best_l2)
    return (primitives.select(take, x_adv, best_x),
            ops.where(take, l2sq, best_l2))


def _adam_loop(model, x, y, w0, const, lr, steps, thresholds, scales,
               class_sets, kappa, margin, *, targeted, num_logits, members):
    batch = ops.shape(x)[0]
    kw = dict(kappa=kappa, margin=margin, targeted=targeted,
              num_logits=num_logits, members=members)

    def objective(w):
        x_adv, l2sq, f, succ = _objective(model, x, y, w, const, thresholds,
                                          scales, class_sets, **kw)
        return ops.sum(l2sq + const * f), (x_adv, l2sq, succ)

    def body(i, carry):
        w, m, v, best_x, best_l2 = carry
        _, (x_adv, l2sq, succ), grad = backends.value_and_grad(objective, w)
        best_x, best_l2 = _keep(best_x, best_l2, x_adv, l2sq, succ)
        step, m, v = adam_update(w, m, v, grad, i, lr)
        return w - step, m, v, best_x, best_l2

    init = (w0, ops.zeros_like(w0), ops.zeros_like(w0), x,
            ops.full((batch,), np.float32(np.inf), "float32"))
    w, _, _, best_x, best_l2 = backends.fori_loop(model, 0, steps, body, init)
    x_adv, l2sq, _, succ = _objective(model, x, y, w, const, thresholds,
                                      scales, class_sets, **kw)
    return _keep(best_x, best_l2, x_adv, l2sq, succ)


_STATIC = ("targeted", "num_logits", "members")
_LOOP = backends.compile_fn(_adam_loop, static_argnames=_STATIC)


def _verified(system, x_adv, y, targeted, members):
    """bool `(batch,)`: the full system (exact forward pass) accepts `x_adv`
    and decides as the attack wanted."""
    labels, rejected, _ = system.predict(np.asarray(x_adv))
    y = np.asarray(y)
    if members:
        wins = labels == y
    else:
        wins = (labels == y) if targeted else (labels != y)
    return wins & ~rejected


def minimum_l2(system, x, y, *, targeted=False, members=False,
               confidence=0.0, detector_margin=0.1, c_init=1.0,
               binary_search_steps=5, steps=100, learning_rate=0.05,
               restarts=1, init_std=0.05, eot_samples=20, seed=0):
    """The shared search of `detector_joint` and `specialists_targeted`
    (arguments documented there). Returns `x_adv` float32 NumPy."""
    for name, value in (("confidence", confidence),
                        ("detector_margin", detector_margin)):
        primitives.check_number(name, value, positive=False)
    for name, value in (("c_init", c_init), ("learning_rate", learning_rate),
                        ("init_std", init_std)):
        primitives.check_number(name, value, positive=name != "init_std")
    for name, value in (("binary_search_steps", binary_search_steps),
                        ("steps", steps), ("restarts", restarts)):
        primitives.check_int(name, value)
    if system.thresholds is None:
        raise ValueError(f"the {system.kind} system is not calibrated "
                         "(thresholds is None)")
    x32 = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    batch = len(x32)
    if members:
        net = system.components["members"]
        class_sets = np.asarray(system.arrays["class_sets"], np.float32)
    else:
        net = system.classifier
        class_sets = np.zeros((1, 1), np.float32)
    joint = joint_model(net, system.detector)
    num_logits = int(np.prod(net.output_shape[1:]))
    adaptive = adaptive_model(joint, eot_samples=eot_samples)
    layer = _Joint(adaptive.attack_model)
    args = dict(
        thresholds=ops.convert_to_tensor(system.thresholds),
        scales=ops.convert_to_tensor(system.scales),
        class_sets=ops.convert_to_tensor(class_sets),
        kappa=primitives.as_scalar(confidence),
        margin=primitives.as_scalar(detector_margin))
    static = dict(targeted=bool(targeted), num_logits=num_logits,
                  members=bool(members))
    lr = primitives.as_scalar(learning_rate)
    steps_t = ops.convert_to_tensor(int(steps), "int32")
    rng = np.random.default_rng(seed)
    best_l2 = np.full(batch, np.inf, np.float32)
    best_x = x32.copy()
    xt, yt = ops.convert_to_tensor(x32), ops.convert_to_tensor(y)
    for restart in range(int(restarts)):
        start = x32
        if restart > 0:
            start = np.clip(x32 + rng.normal(0, init_std, x32.shape),
                            0, 1).astype(np.float32)
        w0 = primitives.to_tanh_space(ops.convert_to_tensor(start), 0.0, 1.0)
        const = np.full(batch, float(c_init), np.float64)
        lower = np.zeros(batch, np.float64)
        upper = np.full(batch, _UPPER_INIT, np.float64)
        for _ in range(int(binary_search_steps)):
            run_x, run_l2 = _LOOP(
                layer, xt, yt, w0,
                ops.convert_to_tensor(const.astype(np.float32)), lr,
                steps_t, **args, **static)
            run_x = ops.convert_to_numpy(run_x)
            run_l2 = ops.convert_to_numpy(run_l2)
            found = np.isfinite(run_l2)
            # Test the candidates on the full system (exact forward pass).
            if found.any():
                ok = np.zeros(batch, bool)
                ok[found] = _verified(system, run_x[found], y[found],
                                      targeted, members)
                found &= ok
            improve = found & (run_l2 < best_l2)
            best_l2 = np.where(improve, run_l2, best_l2)
            best_x[improve] = run_x[improve]
            upper = np.where(found, np.minimum(upper, const), upper)
            lower = np.where(found, lower, np.maximum(lower, const))
            bounded = upper < _UPPER_INIT / 10
            const = np.where(bounded, (lower + upper) / 2.0, const * 10.0)
    return best_x


@register_system_attack("detector_joint")
def detector_joint(system: Any, x: Any, y: Any, *, targeted: bool = False,
                   confidence: float = 0.0, detector_margin: float = 0.1,
                   c_init: float = 1.0, binary_search_steps: int = 5,
                   steps: int = 100, learning_rate: float = 0.05,
                   restarts: int = 1, init_std: float = 0.05,
                   eot_samples: int = 20, seed: int = 0) -> np.ndarray:
    """Joint-loss minimum-L2 attack on a detection system (module doc).

    Args:
        system: a calibrated `models.detection.DetectionSystem`.
        x: float32 `(batch, H, W, C)` in `[0, 1]`.
        y: int `(batch,)`: true labels (untargeted) or targets.
        targeted: reach `y` instead of leaving it.
        confidence: kappa >= 0, the logit margin of the wrong class.
        detector_margin: >= 0, how far under each threshold (in units of
            the detector's clean-score spread) the loss pushes the scores;
            success itself only needs `score <= threshold`.
        c_init: initial trade-off constant c > 0 (x10 while never
            successful, bisected once successful).
        binary_search_steps: values of c per restart, >= 1.
        steps: Adam iterations per value of c, >= 1.
        learning_rate: Adam step size in tanh space, > 0.
        restarts: >= 1; restarts after the first start from `x` plus
            Gaussian noise of std `init_std` (clipped to `[0, 1]`).
        init_std: >= 0, see `restarts`.
        eot_samples: draws per EOT gradient for randomized systems.
        seed: seed of the random starts.

    Returns:
        float32 NumPy `(batch, H, W, C)` in `[0, 1]`: per example, the
        smallest-L2 point found that the full system misclassifies and
        accepts; `x` itself where none was found.

    Raises:
        ValueError: a bad scalar argument (named) or an uncalibrated system.

    Example:
        >>> x_adv = detector_joint(system, x, y, steps=100, restarts=2)
    """
    return minimum_l2(system, x, y, targeted=targeted, members=False,
                      confidence=confidence, detector_margin=detector_margin,
                      c_init=c_init, binary_search_steps=binary_search_steps,
                      steps=steps, learning_rate=learning_rate,
                      restarts=restarts, init_std=init_std,
                      eot_samples=eot_samples, seed=seed)
