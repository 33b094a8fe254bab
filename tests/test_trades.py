"""TRADES (Zhang et al. 2019): the loss against numpy, the inner
maximisation against numpy sign steps on a linear softmax model and its
bounds, the train step against an independent GradientTape computation (one
device and 2-replica mirrored), beta = 0 as natural training, serialization
and errors."""

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

import trades
from trades import TradesLoss, TradesTrainer, trades_perturb
import distribute  # its CPU mirrored strategy avoids collective-key clashes

SHAPE = (4, 4, 1)
CLASSES = 3


def _linear(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(
        keras.layers.Flatten()(inputs)))


def _bn_net(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    h = keras.layers.Dense(8)(keras.layers.Flatten()(inputs))
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(h))


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, *SHAPE)).astype("float32")
    x[:, 0, :2] = 0.0  # pixels on the box's faces
    x[:, 1, :2] = 1.0
    return x, (np.arange(n) % CLASSES).astype("int32")


def _log_softmax(z):
    z = np.asarray(z, "float64")
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_kl(zp, zq):
    lp, lq = _log_softmax(zp), _log_softmax(zq)
    return (np.exp(lp) * (lp - lq)).sum(-1)


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


def test_inner_max_matches_numpy_sign_steps():
    """For logits = flatten(x) @ w + b, grad_x' KL(p(x) || p(x')) =
    (softmax(z') - softmax(z)) @ w.T per example."""
    eps, step, steps, seed = 0.1, 0.04, 3, (5, 7)
    net = _linear()
    x, _ = _batch()
    w, b = (v.numpy().astype("float64") for v in net.trainable_variables)
    flat = x.reshape(len(x), -1)
    p = np.exp(_log_softmax(flat @ w + b))
    noise = tf.random.stateless_normal(x.shape, seed).numpy()
    x_adv = x + 0.001 * noise.astype("float64")
    for _ in range(steps):
        q = np.exp(_log_softmax(x_adv.reshape(len(x), -1) @ w + b))
        grad = ((q - p) @ w.T).reshape(x.shape)
        x_adv = np.clip(x + np.clip(x_adv + step * np.sign(grad) - x, -eps,
                                    eps), 0.0, 1.0)
    got = trades_perturb(net, x, eps=eps, step_size=step, steps=steps,
                         seed=seed)
    np.testing.assert_allclose(got.numpy(), x_adv, atol=1e-6)


def test_inner_max_bounds_inference_mode_and_kl_increase():
    eps, seed = 0.1, (1, 2)
    net = _bn_net()
    x, _ = _batch(n=16)
    stats = [v.numpy() for v in net.non_trainable_variables]
    x_adv = trades_perturb(net, x, eps=eps, step_size=0.03, steps=5,
                           seed=seed).numpy()
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    start = x + 0.001 * tf.random.stateless_normal(x.shape, seed).numpy()

    def kl(z):
        return _np_kl(net(x, training=False), net(z, training=False))

    assert kl(x_adv).mean() > 10 * kl(start).mean()
    assert (kl(x_adv) >= kl(start)).mean() > 0.9
    # BatchNorm ran in inference mode: its moving statistics are untouched.
    for before, after in zip(stats, net.non_trainable_variables):
        np.testing.assert_array_equal(before, after.numpy())


def _compiled(net, beta, lr=0.1, **kwargs):
    model = TradesTrainer(net, **{"eps": 0.1, "step_size": 0.04,
                                  "steps": 3, "seed": 3, **kwargs})
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=TradesLoss(beta),
                  metrics=["accuracy"])
    return model


def _reference_step(net, x, y, x_adv, beta, lr):
    """One SGD step on CE(f(x), y) + beta * mean KL(p(x) || p(x_adv)),
    both calls in training mode, written with plain TF ops."""
    with tf.GradientTape() as tape:
        clean = net(x, training=True)
        adv = net(x_adv, training=True)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(y, clean)
        log_p, log_q = tf.nn.log_softmax(clean), tf.nn.log_softmax(adv)
        kl = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), -1)
        loss = tf.reduce_mean(ce) + beta * tf.reduce_mean(kl)
    grads = tape.gradient(loss, net.trainable_variables)
    for v, g in zip(net.trainable_variables, grads):
        v.assign_sub(lr * g)
    return float(loss)


def test_step_equals_gradient_tape_reference():
    x, y = _batch()
    model = _compiled(_bn_net(), beta=6.0)
    reference = _bn_net()
    # The trainer's start uses the stateless seed (seed, optimizer step).
    x_adv = trades_perturb(reference, x, eps=0.1, step_size=0.04, steps=3,
                           seed=(3, 0))
    want = _reference_step(reference, x, y, x_adv, 6.0, 0.1)
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)
    # Trainable weights, and the BatchNorm statistics of the two calls.
    for a, b in zip(model.net.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_mirrored_step_equals_reference():
    """2 replicas: each crafts x_adv on its half (seed (3, 0)); the
    synchronised update is the step on the mean loss of the whole batch."""
    x, y = _batch()
    strategy = distribute.get_strategy("mirrored")
    with strategy.scope():
        model = _compiled(_linear(), beta=6.0)
        model.build((8, *SHAPE))
    reference = _linear()
    x_adv = tf.concat([trades_perturb(reference, h, eps=0.1, step_size=0.04,
                                      steps=3, seed=(3, 0))
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
    logits = model.net(x, training=False).numpy()
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
    (lambda: trades_perturb(_linear(), np.full((2, *SHAPE), 2.0, "float32"),
                            eps=0.1, step_size=0.01, steps=1),
     r"x must lie in \[clip_min, clip_max\]"),
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
