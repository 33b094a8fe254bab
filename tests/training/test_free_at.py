"""Free adversarial training (Shafahi et al. 2019, Algorithm 1) against a
numpy reference of the m replays on a linear softmax model: weights, delta,
its persistence across steps, one delta per replica under MirroredStrategy
(TensorFlow only), the natural-training limit, serialization and errors."""

import keras
import ml_collections
import numpy as np
import pytest
from keras import ops

from training import free_at
from training.free_at import FreeAdversarialTrainer, MinibatchSchedule
from training.losses import classification_loss
from training import distribute  # its CPU mirrored strategy avoids collective-key clashes

SHAPE = (4, 4, 1)
CLASSES = 3


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    logits = keras.layers.Dense(CLASSES, name="logits")(
        keras.layers.Flatten()(inputs))
    return keras.Model(inputs, logits)


def _batch(n=8, seed=0):
    """Pixels in [0, 1] with exact 0s and 1s, so the clip to the box and
    its zero gradient outside it matter."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, *SHAPE)).astype("float32")
    x[:, 0, :2] = 0.0
    x[:, 1, :2] = 1.0
    return x, (np.arange(n) % CLASSES).astype("int32")


def _reference(w, b, x, y, delta, eps, replays, lr):
    """Algorithm 1 by hand for logits = flatten(x) @ w + b, mean CE, SGD:
    returns (w, b, delta, loss of the last replay). d/d delta goes through
    clip(x + delta, 0, 1): zero where x + delta is outside [0, 1]."""
    w, b, delta = (np.array(a, "float64") for a in (w, b, delta))
    n = len(x)
    onehot = np.eye(CLASSES)[y]
    for _ in range(replays):
        raw = x + delta
        v = np.clip(raw, 0.0, 1.0).reshape(n, -1)
        z = v @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.mean(np.log((p * onehot).sum(1)))
        g_z = (p - onehot) / n
        g_delta = (g_z @ w.T).reshape(x.shape) * ((raw >= 0) & (raw <= 1))
        w, b = w - lr * v.T @ g_z, b - lr * g_z.sum(0)
        delta = np.clip(delta + eps * np.sign(g_delta), -eps, eps)
    return w, b, delta, loss


def _trainer(eps, replays, lr, seed=0, batch=8):
    model = FreeAdversarialTrainer(_net(seed), eps=eps, replays=replays)
    model.build((batch, *SHAPE))
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=classification_loss(), metrics=["accuracy"])
    return model


def _weights(model):
    return [v.numpy() for v in model.net.trainable_variables]


def test_step_equals_numpy_replays():
    eps, replays, lr = 0.3, 3, 0.5
    x, y = _batch()
    model = _trainer(eps, replays, lr)
    w, b = _weights(model)
    logs = model.train_on_batch(x, y, return_dict=True)
    want_w, want_b, want_delta, want_loss = _reference(
        w, b, x, y, np.zeros_like(x), eps, replays, lr)
    got_w, got_b = _weights(model)
    np.testing.assert_allclose(got_w, want_w, atol=1e-5)
    np.testing.assert_allclose(got_b, want_b, atol=1e-5)
    np.testing.assert_allclose(model.delta.numpy(), want_delta, atol=1e-6)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    assert model.optimizer.iterations.numpy() == replays


def test_delta_stays_in_the_ball_and_persists_across_steps():
    eps, replays, lr = 0.2, 2, 0.5
    x1, y1 = _batch(seed=1)
    x2, y2 = _batch(seed=2)
    model = _trainer(eps, replays, lr)
    model.train_on_batch(x1, y1)
    first = model.delta.numpy()
    assert np.abs(first).max() == pytest.approx(eps)
    w, b = _weights(model)
    model.train_on_batch(x2, y2)
    # The second minibatch starts from the first one's delta.
    want_w, _, want_delta, _ = _reference(w, b, x2, y2, first, eps, replays,
                                          lr)
    second = model.delta.numpy()
    np.testing.assert_allclose(second, want_delta, atol=1e-6)
    np.testing.assert_allclose(_weights(model)[0], want_w, atol=1e-5)
    # FGSM steps of eps from 0, clipped: delta is in {-eps, 0, eps}.
    assert np.isin(np.round(second / eps, 5), [-1.0, 0.0, 1.0]).all()
    assert not np.allclose(second, first)


def test_smaller_last_batch_uses_the_first_rows():
    eps = 0.2
    x, y = _batch(n=8)
    model = _trainer(eps, 2, 0.5)
    model.train_on_batch(x[:5], y[:5])
    delta = model.delta.numpy()
    assert np.abs(delta[:5]).max() == pytest.approx(eps)
    np.testing.assert_array_equal(delta[5:], 0.0)


def test_a_too_large_batch_of_known_size_is_refused():
    """The step is traced with the batch size (always under JAX; under
    TensorFlow the first trace)."""
    model = _trainer(0.2, 2, 0.5)
    with pytest.raises(ValueError, match="larger than the per-replica batch"):
        model.train_on_batch(*_batch(n=9))
    np.testing.assert_array_equal(model.delta.numpy(), 0.0)


@pytest.mark.tensorflow_only
def test_a_too_large_batch_known_at_run_time_fails():
    """TensorFlow retraces with an unknown batch size after a batch of
    another size: the too-large batch fails when the step runs."""
    import tensorflow as tf

    model = _trainer(0.2, 2, 0.5)
    model.train_on_batch(*_batch(n=5))
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        model.train_on_batch(*_batch(n=9))
    if "the batch is larger than the per-replica" not in str(info.value):
        pytest.xfail("free_at.py cannot attach its message to a run-time "
                     "check without a core.backends helper (TF's own slice "
                     f"error instead: {str(info.value)[:200]})")


@pytest.mark.tensorflow_only
def test_each_replica_keeps_its_own_delta():
    """Under 2-replica MirroredStrategy the per-replica deltas, stacked in
    batch order, and the synchronised weights equal the one-batch numpy
    reference (each replica's input gradient is its examples' own)."""
    import tensorflow as tf

    eps, replays, lr = 0.3, 3, 0.5
    x, y = _batch()
    strategy = distribute.get_strategy("mirrored")
    with strategy.scope():
        model = _trainer(eps, replays, lr)
    assert tuple(model.delta.shape) == (4, *SHAPE)
    w, b = _weights(model)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model.fit(ds, epochs=1, verbose=0)
    want_w, want_b, want_delta, _ = _reference(
        w, b, x, y, np.zeros_like(x), eps, replays, lr)
    local = strategy.experimental_local_results(model.delta.value)
    np.testing.assert_allclose(np.concatenate([d.numpy() for d in local]),
                               want_delta, atol=1e-6)
    np.testing.assert_allclose(_weights(model)[0], want_w, atol=1e-5)
    np.testing.assert_allclose(_weights(model)[1], want_b, atol=1e-5)


def test_fit_runs_a_few_steps():
    eps, replays, lr = 0.2, 2, 0.5
    x, y = _batch(n=16)
    model = _trainer(eps, replays, lr)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations.numpy()) == 4 * replays
    assert np.abs(model.delta.numpy()).max() == pytest.approx(eps)


def test_one_replay_at_eps_zero_is_natural_training():
    x, y = _batch()
    model = _trainer(eps=0.0, replays=1, lr=0.5)
    natural = _net()
    natural.compile(optimizer=keras.optimizers.SGD(0.5),
                    loss=classification_loss())
    want = natural.train_on_batch(x, y)
    got = model.train_on_batch(x, y, return_dict=True)["loss"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for a, b in zip(_weights(model), natural.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-7)
    np.testing.assert_array_equal(model.delta.numpy(), 0.0)


def test_schedule_is_read_per_minibatch():
    piecewise = keras.optimizers.schedules.PiecewiseConstantDecay(
        [1], [1.0, 0.1])
    model = FreeAdversarialTrainer(_net(), eps=0.1, replays=4)
    model.build((8, *SHAPE))
    model.compile(optimizer=keras.optimizers.SGD(piecewise),
                  loss=classification_loss())
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, MinibatchSchedule)
    # optimizer steps 0..7 are minibatches 0, 0, 0, 0, 1, 1, 1, 1
    got = [float(schedule(ops.convert_to_tensor(s))) for s in range(12)]
    np.testing.assert_allclose(got, [1.0] * 8 + [0.1] * 4, rtol=1e-6)


def test_round_trip_through_keras_file(tmp_path):
    x, y = _batch()
    model = FreeAdversarialTrainer(_net(), eps=0.2, replays=2)
    model.build((8, *SHAPE))
    model.compile(optimizer=keras.optimizers.SGD(
        keras.optimizers.schedules.CosineDecay(0.1, 10)),
        loss=classification_loss(), metrics=["accuracy"])
    model.train_on_batch(x, y)
    model.save(tmp_path / "free.keras")
    loaded = keras.saving.load_model(tmp_path / "free.keras")
    assert isinstance(loaded, FreeAdversarialTrainer)
    assert (loaded.eps, loaded.replays) == (0.2, 2)
    np.testing.assert_array_equal(loaded.delta.numpy(), model.delta.numpy())
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    schedule = loaded.optimizer._learning_rate
    assert isinstance(schedule, MinibatchSchedule)  # wrapped once, not twice
    assert not isinstance(schedule.schedule, MinibatchSchedule)
    config = FreeAdversarialTrainer.from_config(model.get_config())
    assert (config.eps, config.replays) == (0.2, 2)
    assert "attack" not in model.get_config()


@pytest.mark.tensorflow_only  # 2 replicas: tf.distribute on split CPUs
def test_a_delta_of_another_replica_count_restarts_from_zero(tmp_path):
    model = _trainer(0.2, 2, 0.5)
    model.train_on_batch(*_batch())
    model.save_weights(tmp_path / "w.weights.h5")
    strategy = distribute.get_strategy("mirrored")
    with strategy.scope():
        other = _trainer(0.2, 2, 0.5, seed=3)
        other.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(other.delta.numpy(), 0.0)
    np.testing.assert_allclose(_weights(other)[0], _weights(model)[0])


@pytest.mark.parametrize("kwargs, match", [
    ({"replays": 0}, "replays must be an integer >= 1; got 0"),
    ({"replays": 1.5}, "replays must be an integer"),
    ({"replays": True}, "replays must be an integer"),
    ({"eps": -0.1}, r"eps must be a finite number >= 0; got -0.1"),
    ({"eps": float("nan")}, "eps must be a finite number"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FreeAdversarialTrainer(_net(), **{"eps": 0.1, "replays": 2,
                                          **kwargs})


def test_unknown_batch_and_recipe_errors():
    model = FreeAdversarialTrainer(_net(), eps=0.1, replays=2)
    with pytest.raises(ValueError, match="known global batch size"):
        model.build((None, *SHAPE))
    cfg = ml_collections.ConfigDict({
        "attack": {"eps": 0.1, "norm": "2"},
        "train": {"replays": 2, "label_smoothing": 0.0}})
    with pytest.raises(ValueError, match="attack.norm 'inf'.*'2'"):
        free_at.from_recipe(cfg, _net())
    cfg.attack.norm = "inf"
    cfg.train.replays = 0
    with pytest.raises(ValueError, match="replays"):
        free_at.from_recipe(cfg, _net())
