"""optimization.py: LR schedules against hand-computed values (warmup +
piecewise of Xie et al. 2019 / Goyal et al. 2017, the existing ones kept),
clear errors, and the coupled L2 penalty of TF1's `l2_regularizer`."""

import keras
import ml_collections
import numpy as np
import pytest

from core import backends
from training import optimization
from training import distribute  # its CPU mirrored strategy avoids collective-key clashes
from training.optimization import L2SGD, WarmupPiecewise, build_optimizer, \
    build_schedule


def _opt(**kw):
    return ml_collections.ConfigDict({
        "name": "sgd", "learning_rate": 1.6, "momentum": 0.9,
        "nesterov": True, "weight_decay": 0.0, **kw})


def _sched(**kw):
    return ml_collections.ConfigDict({
        "name": "piecewise", "warmup_epochs": 0, "peak_fraction": 0.4,
        "boundaries_epochs": (), "decay_factor": 0.1, **kw})


def _lr(schedule, step):
    return float(schedule(step)) if callable(schedule) else schedule


XIE = dict(name="piecewise", warmup_epochs=5, warmup_start_lr=0.1,
           boundaries_epochs=(35, 70, 95), decay_factor=0.1)


@pytest.mark.parametrize("step, expected", [
    (0, 0.1),                       # warmup starts at 0.1
    (25, 0.1 + 1.5 * 25 / 50),      # halfway: 0.85
    (49, 0.1 + 1.5 * 49 / 50),
    (50, 1.6),                      # end of warmup (5 epochs x 10 steps)
    (349, 1.6),
    (350, 1.6),                     # Keras: the boundary step keeps 1.6
    (351, 0.16),                    # after epoch 35
    (700, 0.16),
    (701, 0.016),                   # after epoch 70
    (951, 0.0016),                  # after epoch 95
    (1099, 0.0016),
])
def test_warmup_piecewise_matches_hand_computed_values(step, expected):
    schedule = build_schedule(_opt(), _sched(**XIE), steps_per_epoch=10,
                              epochs=110)
    assert isinstance(schedule, WarmupPiecewise)
    assert _lr(schedule, step) == pytest.approx(expected, rel=1e-6)


def test_warmup_start_above_the_target_is_flat():
    # 0.1 * 128 / 256 = 0.05 < 0.1: the reference does not warm up.
    schedule = build_schedule(_opt(learning_rate=0.05), _sched(**XIE),
                              steps_per_epoch=10, epochs=110)
    for step in (0, 25, 50, 350):
        assert _lr(schedule, step) == pytest.approx(0.05)
    assert _lr(schedule, 351) == pytest.approx(0.005)


def test_warmup_without_start_key_rises_from_zero():
    schedule = build_schedule(_opt(learning_rate=0.4), _sched(
        warmup_epochs=2, boundaries_epochs=(5,)), steps_per_epoch=4,
        epochs=8)
    assert [_lr(schedule, s) for s in (0, 4, 8, 20, 21)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.4, 0.04])


def test_warmup_piecewise_round_trips_and_validates():
    schedule = WarmupPiecewise([10, 20], [1.0, 0.1, 0.01], 5, 0.5)
    again = WarmupPiecewise.from_config(schedule.get_config())
    for step in (0, 3, 5, 11, 25):
        assert _lr(again, step) == pytest.approx(_lr(schedule, step))
    with pytest.raises(ValueError, match=r"len\(boundaries\) \+ 1 = 3 "
                       r"entries; got 2"):
        WarmupPiecewise([10, 20], [1.0, 0.1], 5)
    with pytest.raises(ValueError, match="warmup_steps must be >= 1; got 0"):
        WarmupPiecewise([10], [1.0, 0.1], 0)
    no_bounds = WarmupPiecewise([], [1.0], 4)
    assert [_lr(no_bounds, s) for s in (0, 2, 4, 9)] == pytest.approx(
        [0.0, 0.5, 1.0, 1.0])


def test_existing_schedules_are_unchanged():
    plain = build_schedule(_opt(learning_rate=0.1), _sched(
        boundaries_epochs=(2, 3)), steps_per_epoch=10, epochs=4)
    assert isinstance(plain,
                      keras.optimizers.schedules.PiecewiseConstantDecay)
    assert [_lr(plain, s) for s in (0, 20, 21, 31)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001])
    cosine = build_schedule(_opt(learning_rate=0.1), _sched(
        name="cosine", warmup_epochs=1), steps_per_epoch=10, epochs=4)
    assert [_lr(cosine, s) for s in (0, 5, 10, 25, 40)] == pytest.approx(
        [0.0, 0.05, 0.1, 0.05, 0.0], abs=1e-6)
    assert build_schedule(_opt(learning_rate=0.3), _sched(name="constant"),
                          10, 4) == 0.3
    cyclic = build_schedule(_opt(learning_rate=0.2), _sched(name="cyclic"),
                            10, 5)
    assert _lr(cyclic, 20) == pytest.approx(0.2)


@pytest.mark.parametrize("sched, match", [
    (dict(name="step"), r"schedule.name must be one of \('constant', "
                        r"'cosine', 'piecewise', 'cyclic'\); got 'step'"),
    (dict(name="constant", warmup_epochs=1),
     r"warmup_epochs is supported with the \('cosine', 'piecewise'\) "
     r"schedules only; got 'constant'"),
    (dict(name="cyclic", warmup_epochs=1), r"only; got 'cyclic'"),
    (dict(warmup_epochs=1, warmup_start_lr=-0.1),
     r"warmup_start_lr must be >= 0; got -0.1"),
])
def test_bad_schedules_raise(sched, match):
    with pytest.raises(ValueError, match=match):
        build_schedule(_opt(), _sched(**sched), 10, 5)


# --- weight decay -----------------------------------------------------------


def _dense_bn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, name="fc")(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(h))


def test_l2_mode_adds_wd_times_w_to_the_gradient_of_kernels_only():
    """Two Nesterov steps equal the hand-computed TF1 MomentumOptimizer
    steps on loss + wd/2 * ||kernel||^2 (bias, gamma, beta undecayed)."""
    wd, lr, mu = 1e-2, 0.1, 0.9
    optimizer = build_optimizer(
        _opt(learning_rate=lr, weight_decay=wd, weight_decay_mode="l2"),
        _sched(name="constant"), 10, 1)
    assert isinstance(optimizer, L2SGD) and optimizer.l2 == wd
    assert optimizer.weight_decay is None  # no decoupled decay on top
    model = _dense_bn()
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    w0 = [np.asarray(v) for v in model.trainable_variables]
    velocity = [np.zeros_like(w) for w in w0]
    w = [np.copy(v) for v in w0]
    for _ in range(2):
        _, _, grads, _ = backends.gradients(
            lambda: (keras.ops.mean(keras.ops.square(
                model(x, training=True))), ()), model.trainable_variables)
        for i, (v, g) in enumerate(zip(model.trainable_variables, grads)):
            g = np.asarray(g) + (wd * w[i] if "kernel" in v.path else 0.0)
            velocity[i] = mu * velocity[i] + g      # TF1 accumulator
            w[i] = w[i] - lr * (g + mu * velocity[i])
        optimizer.apply(grads, model.trainable_variables)
    for v, expected in zip(model.trainable_variables, w):
        np.testing.assert_allclose(np.asarray(v), expected, rtol=1e-5,
                                   atol=1e-7, err_msg=v.path)


@pytest.mark.tensorflow_only
def test_l2_is_counted_once_under_two_replicas():
    """Gradients are summed over replicas first; wd * w is added after, so
    two replicas step like one device (a doubled penalty would move the
    kernel by an extra lr * wd * w = 5% of w)."""
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.zeros((8, 4), "float32")

    def one_step(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((3,)),
                                      keras.layers.Dense(4, name="fc")])
            model.compile(optimizer=build_optimizer(
                _opt(learning_rate=0.1, weight_decay=0.5,
                     weight_decay_mode="l2"), _sched(name="constant"), 1, 1),
                loss="mse")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        return model.get_layer("fc").kernel.numpy()

    import tensorflow as tf

    one = one_step(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two = one_step(distribute.get_strategy("mirrored"))
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-6)


def test_decoupled_mode_is_the_keras_default_and_modes_validate():
    optimizer = build_optimizer(_opt(weight_decay=1e-4),
                                _sched(name="constant"), 10, 1)
    assert type(optimizer) is keras.optimizers.SGD
    assert optimizer.weight_decay == pytest.approx(1e-4)
    with pytest.raises(ValueError, match=r"weight_decay_mode must be one of "
                       r"\('decoupled', 'l2'\); got 'L2'"):
        build_optimizer(_opt(weight_decay_mode="L2"), _sched(), 10, 1)
    adam = build_optimizer(_opt(name="adam", weight_decay=1e-4,
                                weight_decay_mode="l2"), _sched(), 10, 1)
    assert isinstance(adam, optimization.L2Adam) and adam.l2 == 1e-4
    config = L2SGD(0.1, l2=1e-4, momentum=0.9, nesterov=True).get_config()
    again = L2SGD.from_config(config)
    assert again.l2 == 1e-4 and again.nesterov
    with pytest.raises(ValueError, match=r"l2 must be >= 0; got -1"):
        L2SGD(0.1, l2=-1)
