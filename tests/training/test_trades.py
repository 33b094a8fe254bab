"""TRADES (Zhang et al. 2019): the loss against numpy, the inner
maximisation against numpy sign steps on a linear softmax model and its
bounds, the train step against an independent computation on Keras's
stateless call (one device; 2-replica mirrored under TensorFlow), beta = 0
as natural training, serialization and errors. Backend-neutral except the
tf.distribute test."""

import keras
import ml_collections
import numpy as np
import pytest
from keras import ops

import attacks
from core import backends
from tests.attacks.kl_reference import (SHAPE, batch as _batch,
                                       bn_net as _bn_net,
                                       linear_net as _linear,
                                       log_softmax as _log_softmax,
                                       np_kl as _np_kl)
from training import distribute  # CPU mirrored: no collective-key clashes
from training import trades
from training.trades import TradesLoss, TradesTrainer

@pytest.mark.parametrize("beta, smoothing", [(6.0, 0.0), (0.0, 0.0),
                                             (1.5, 0.1)])
def test_loss_matches_numpy(beta, smoothing):
    rng = np.random.default_rng(0)
    clean, adv = rng.normal(size=(2, 5, 4)) * 3
    y = np.array([0, 1, 2, 3, 1])
    target = np.eye(4)[y] * (1 - smoothing) + smoothing / 4
    ce = -(target * _log_softmax(clean)).sum(-1)
    want = np.mean(ce + beta * _np_kl(clean, adv))
    y_pred = np.concatenate([clean, adv], -1).astype("float32")
    got = TradesLoss(beta, smoothing)(y, y_pred)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # KL(p || p) = 0: clean logits twice give the cross-entropy alone.
    same = np.concatenate([clean, clean], -1).astype("float32")
    np.testing.assert_allclose(float(TradesLoss(beta, smoothing)(y, same)),
                               ce.mean(), rtol=1e-5)


def _compiled(net, beta, lr=0.1, **kwargs):
    model = TradesTrainer(net, **{"eps": 0.1, "step_size": 0.04,
                                  "steps": 3, "seed": 3, **kwargs})
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=TradesLoss(beta),
                  metrics=["accuracy"])
    return model


def _reference_step(net, x, y, x_adv, beta, lr):
    """One SGD step on CE(f(x), y) + beta * mean KL(p(x) || p(x_adv)),
    both calls in training mode, written with plain keras.ops on the
    network's stateless call (the weights are the differentiated inputs;
    BatchNorm statistics are updated by both calls, clean first)."""
    trainable = [v.value for v in net.trainable_variables]
    non_trainable = [v.value for v in net.non_trainable_variables]

    def loss_fn(*weights):
        clean, state = net.stateless_call(weights, non_trainable, x,
                                          training=True)
        adv, state = net.stateless_call(weights, state, x_adv,
                                        training=True)
        ce = ops.sparse_categorical_crossentropy(y, clean, from_logits=True)
        log_p = ops.log_softmax(clean, axis=-1)
        log_q = ops.log_softmax(adv, axis=-1)
        kl = ops.sum(ops.exp(log_p) * (log_p - log_q), -1)
        return ops.mean(ce) + beta * ops.mean(kl), state

    loss, state, _, grads = backends.gradients(loss_fn, [], trainable)
    for v, g in zip(net.trainable_variables, grads):
        v.assign(v - lr * g)
    for v, value in zip(net.non_trainable_variables, state):
        v.assign(value)
    return float(loss)


def test_step_equals_gradient_tape_reference():
    x, y = _batch()
    model = _compiled(_bn_net(), beta=6.0)
    reference = _bn_net()
    # The trainer's start uses the stateless seed (seed, optimizer step).
    x_adv = attacks.trades_kl(reference, x, None, eps=0.1, step_size=0.04,
                              steps=3, seed=(3, 0))
    want = _reference_step(reference, x, y, x_adv, 6.0, 0.1)
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)
    # Trainable weights, and the BatchNorm statistics of the two calls.
    for a, b in zip(model.net.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


@pytest.mark.parametrize("seed", [None, 5])
def test_fit_runs_steps_and_moves_the_weights(seed):
    """A few steps through fit(): seed=None draws the start from the
    global generator (TensorFlow) or the trainer's own generator inside the
    compiled step (JAX); an int from (seed, optimizer step)."""
    x, y = _batch(16)
    model = _compiled(_bn_net(), beta=6.0, seed=seed)
    before = [v.numpy() for v in model.net.trainable_variables]
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations.numpy()) == 4
    assert all(not np.allclose(a, v.numpy()) for a, v in zip(
        before, model.net.trainable_variables))


@pytest.mark.tensorflow_only
def test_mirrored_step_equals_reference():
    """2 replicas: each crafts x_adv on its half (seed (3, 0)); the
    synchronised update is the step on the mean loss of the whole batch."""
    import tensorflow as tf

    x, y = _batch()
    strategy = distribute.get_strategy("mirrored")
    with strategy.scope():
        model = _compiled(_linear(), beta=6.0)
        model.build((8, *SHAPE))
    reference = _linear()
    x_adv = tf.concat([attacks.trades_kl(reference, h, None, eps=0.1,
                                         step_size=0.04, steps=3,
                                         seed=(3, 0))
                       for h in (x[:4], x[4:])], 0)
    want = _reference_step(reference, x, y, x_adv, 6.0, 0.1)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    history = model.fit(ds, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], want, rtol=1e-5)
    for a, b in zip(model.net.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_beta_zero_is_the_clean_cross_entropy_step():
    x, y = _batch()
    model = _compiled(_bn_net(), beta=0.0, lr=0.5)
    natural = _bn_net()
    natural.compile(optimizer=keras.optimizers.SGD(0.5),
                    loss=keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True))
    want = natural.train_on_batch(x, y)
    got = model.train_on_batch(x, y, return_dict=True)["loss"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for a, b in zip(model.net.trainable_variables,
                    natural.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_validation_is_clean():
    x, y = _batch()
    model = _compiled(_bn_net(), beta=6.0)
    logs = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    logits = np.asarray(model.net(x, training=False))
    want = -_log_softmax(logits)[np.arange(8), y].mean()
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"],
                               np.mean(logits.argmax(-1) == y))


def test_round_trip_through_keras_file(tmp_path):
    x, y = _batch()
    model = _compiled(_bn_net(), beta=2.0)
    model.train_on_batch(x, y)
    model.save(tmp_path / "trades.keras")
    loaded = keras.saving.load_model(tmp_path / "trades.keras")
    assert isinstance(loaded, TradesTrainer)
    assert (loaded.eps, loaded.step_size, loaded.steps, loaded.seed) == (
        0.1, 0.04, 3, 3)
    assert isinstance(loaded.loss, TradesLoss) and loaded.loss.beta == 2.0
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    loss = TradesLoss.from_config(TradesLoss(4.0, 0.1).get_config())
    assert (loss.beta, loss.label_smoothing) == (4.0, 0.1)
    assert "attack" not in model.get_config()


@pytest.mark.parametrize("make, match", [
    (lambda: TradesLoss(-1.0), r"beta must be a finite number >= 0; got "
                               r"-1.0"),
    (lambda: TradesLoss(float("inf")), "beta must be a finite number"),
    (lambda: TradesLoss(6.0, 1.0), r"label_smoothing must be in \[0, 1\)"),
    (lambda: TradesTrainer(_linear(), eps=-0.1), "eps must be"),
    (lambda: TradesTrainer(_linear(), steps=0), "steps must be an integer"),
    (lambda: TradesTrainer(_linear(), step_size=0.0), "step_size must be"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_logits_loss_and_recipe():
    with pytest.raises(ValueError, match=r"\(batch, 2 \* classes\)"):
        TradesLoss()(np.zeros(2), np.zeros((2, 3), "float32"))
    x, y = _batch()
    model = TradesTrainer(_linear(), eps=0.1, step_size=0.04, steps=1)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.raises(ValueError, match="compiled with trades.TradesLoss"):
        model.train_on_batch(x, y)
    cfg = ml_collections.ConfigDict({
        "attack": {"eps": 0.1, "step_size": 0.05, "steps": 2, "norm": "2"},
        "train": {"beta": 6.0, "label_smoothing": 0.0, "seed": 0}})
    with pytest.raises(ValueError, match="attack.norm 'inf'.*'2'"):
        trades.from_recipe(cfg, _linear())
    cfg.attack.norm = "inf"
    cfg.train.beta = -1.0
    with pytest.raises(ValueError, match="beta must be"):
        trades.from_recipe(cfg, _linear())
