"""Thermometer encoding + LS-PGA adversarial training (thermometer_at.py) and
the BPDA attack model of attacks.bpda.with_straight_through, against NumPy
references and on a small thermometer CNN trained on real Fashion-MNIST."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import attacks
import thermometer_at as th
from attacks.bpda import with_straight_through
from layers import BitDepthReduction, ThermometerEncoding

LEVELS = 16
EPS = 0.1
T = (np.arange(LEVELS) / LEVELS).astype("float32")  # the layer's thresholds


def _np_bucket(v):
    return (np.asarray(v, "float32")[..., None] >= T).sum(-1) - 1


def _cnn(levels=LEVELS, mode="thermometer", width=8):
    inputs = keras.Input((28, 28, 1))
    h = ThermometerEncoding(levels=levels, mode=mode)(inputs)
    h = keras.layers.Conv2D(width, 5, strides=2, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


@pytest.fixture(scope="module")
def trained(fmnist_test):
    """A thermometer CNN naturally trained 2 epochs on 3000 real training
    images, and 256 test images."""
    from data.fashion_mnist import load_fashion_mnist

    keras.utils.set_random_seed(3)
    x, y = load_fashion_mnist("train")
    net = _cnn()
    net.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
    net.fit(x[:3000, ..., None].astype("float32") / 255.0,
            y[:3000].astype("int32"), batch_size=100, epochs=2, verbose=0)
    return net, fmnist_test[0][:256], fmnist_test[1][:256]


def _accuracy(net, x, y):
    return float(np.mean(np.argmax(net(x), -1) == y))


def test_reachable_mask_matches_interval_reference():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(size=200), T, [0.0, 1.0, 0.999,
                        T[3] - 1e-7, T[3] + 1e-7]]).astype("float32")
    x = x.reshape(1, -1, 1, 1)
    for eps in (0.0, 0.03, EPS, 0.5):
        got = th.reachable_mask(x, eps, LEVELS).numpy()
        lo = np.maximum(x - np.float32(eps), 0)[..., None]
        hi = np.minimum(x + np.float32(eps), 1)[..., None]
        upper = np.append(T[1:], np.inf)
        # bucket b = [t_b, t_b+1) meets [lo, hi]
        want = (T <= hi) & (upper > lo)
        np.testing.assert_array_equal(got, want)
        assert got.sum(-1).min() >= 1  # x's own bucket


def test_relaxed_encoding_matches_numpy_and_tends_to_the_hard_code():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 3, 2, LEVELS)).astype("float32")
    mask = rng.uniform(size=logits.shape) < 0.5
    mask[..., 5] = True
    z = np.where(mask, logits / 0.7, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.cumsum(p[..., ::-1], -1)[..., ::-1].reshape(2, 3, 3, -1)
    got = th.relaxed_encoding(logits, mask, 0.7).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    buckets = np.argmax(np.where(mask, logits, -np.inf), -1)
    cold = th.relaxed_encoding(logits, mask, 1e-5).numpy()
    np.testing.assert_allclose(cold, th.hard_code(buckets, LEVELS), atol=1e-6)
    # Logits peaked on x's own bucket give ThermometerEncoding(x) itself.
    x = rng.uniform(size=(2, 3, 3, 2)).astype("float32")
    own = 3.0 * np.eye(LEVELS, dtype="float32")[_np_bucket(x)]
    cold = th.relaxed_encoding(own, np.ones_like(own, bool), 1e-3)
    np.testing.assert_array_equal(cold.numpy(), ThermometerEncoding(LEVELS)(x))


def test_ls_pga_codes_are_reachable_thermometer_codes(trained):
    net, x, y = trained
    buckets = th.ls_pga_buckets(net, x, y, eps=EPS, steps=3, seed=1).numpy()
    lo, hi = _np_bucket(np.maximum(x - EPS, 0)), _np_bucket(x + EPS)
    assert np.all((lo <= buckets) & (buckets <= hi))
    code = th.hard_code(buckets, LEVELS).numpy().reshape(*x.shape, LEVELS)
    assert set(np.unique(code)) <= {0.0, 1.0}
    assert np.all(np.diff(code, axis=-1) <= 0)  # monotone bits
    np.testing.assert_array_equal(code.sum(-1) - 1, buckets)
    x_adv = th.ls_pga(net, x, y, eps=EPS, steps=3, seed=1)
    assert x_adv.shape == x.shape and x_adv.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x_adv)) <= float(
        tf.reduce_max(x_adv)) <= 1.0
    assert float(np.abs(x_adv - x).max()) <= EPS + 1e-6
    np.testing.assert_array_equal(
        ThermometerEncoding(LEVELS)(x_adv), th.hard_code(buckets, LEVELS))
    assert np.mean(buckets != _np_bucket(x)) > 0.05  # it did move
    np.testing.assert_array_equal(  # the seed fixes the start
        x_adv, th.ls_pga(net, x, y, eps=EPS, steps=3, seed=1))


def test_ls_pga_lowers_accuracy_and_eps_zero_is_identity(trained):
    net, x, y = trained
    clean = _accuracy(net, x, y)
    assert clean > 0.7
    x_adv = th.ls_pga(net, x, y, eps=EPS, steps=4, seed=0)
    assert _accuracy(net, x_adv, y) < clean - 0.4
    same = th.ls_pga(net, x, None, eps=0.0, steps=2, seed=0)
    np.testing.assert_array_equal(ThermometerEncoding(LEVELS)(same),
                                  ThermometerEncoding(LEVELS)(x))


def test_one_hot_mode():
    net = _cnn(levels=8, mode="one_hot")
    x = np.random.default_rng(2).uniform(size=(4, 28, 28, 1)).astype(
        "float32")
    buckets = th.ls_pga_buckets(net, x, None, eps=0.2, steps=2, seed=0)
    x_adv = th.ls_pga(net, x, None, eps=0.2, steps=2, seed=0)
    np.testing.assert_array_equal(net.layers[1](x_adv),
                                  th.hard_code(buckets, 8, "one_hot"))


def _trainer(net, alpha=0.5, steps=2):
    model = th.ThermometerTrainer(
        net, {"name": "ls_pga", "eps": EPS, "steps": steps, "seed": 0},
        alpha=alpha)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True), metrics=["accuracy"])
    return model


def test_train_step_trains_on_adversarial_codes(trained):
    net = keras.models.clone_model(trained[0])
    net.set_weights(trained[0].get_weights())
    x, y = trained[1][:32], trained[2][:32]
    model = _trainer(net)
    x_mix, y_mix, w = model.adversarial_batch((x, y))
    enc = ThermometerEncoding(LEVELS)
    np.testing.assert_array_equal(x_mix[:32], x)
    codes_adv, codes = enc(x_mix[32:]).numpy(), enc(x).numpy()
    assert np.mean(np.any(codes_adv != codes, -1)) > 0.05
    np.testing.assert_array_equal(y_mix, np.concatenate([y, y]))
    np.testing.assert_allclose(w, np.ones(64))  # 2 * 0.5 each
    before = [v.numpy() for v in net.trainable_variables]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(a, v.numpy())
               for a, v in zip(before, net.trainable_variables))
    only_adv = _trainer(net, alpha=0.0).adversarial_batch((x, y))
    assert only_adv[0].shape == x.shape


def test_trainer_serialization_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = th.ThermometerTrainer(
        _cnn(), {"name": "ls_pga", "eps": EPS, "steps": 2, "seed": 0})
    model.build((None, 28, 28, 1))
    path = tmp_path / "trainer.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, th.ThermometerTrainer)
    assert loaded.attack == model.attack and loaded.alpha == 0.5
    for a, b in zip(model.net.get_weights(), loaded.net.get_weights()):
        np.testing.assert_array_equal(a, b)
    again = th.ThermometerTrainer.from_config(model.get_config())
    assert again.attack == model.attack
    assert loaded.net.layers[1].get_config()["surrogate"] == "none"


@pytest.mark.parametrize("attack, alpha, match", [
    ({"name": "pgd", "eps": EPS, "steps": 2}, 0.5, "'ls_pga'"),
    ({"name": "ls_pga", "eps": EPS, "steps": 2, "step_size": 0.1}, 0.5,
     "step_size"),
    ({"name": "ls_pga", "eps": EPS}, 0.5, "include eps and steps"),
    ({"name": "ls_pga", "eps": -0.1, "steps": 2}, 0.5, "eps"),
    ({"name": "ls_pga", "eps": EPS, "steps": 0}, 0.5, "steps"),
    ({"name": "ls_pga", "eps": EPS, "steps": 2, "logit_step": 0.0}, 0.5,
     "logit_step"),
    ({"name": "ls_pga", "eps": EPS, "steps": 2, "anneal": 0.5}, 0.5,
     "anneal"),
    ({"name": "ls_pga", "eps": EPS, "steps": 2}, 1.0, "alpha"),
])
def test_bad_configs(attack, alpha, match):
    with pytest.raises(ValueError, match=match):
        th.ThermometerTrainer(_cnn(), attack, alpha)


def test_network_without_leading_thermometer_is_refused():
    attack = {"name": "ls_pga", "eps": EPS, "steps": 2}
    inputs = keras.Input((28, 28, 1))
    plain = keras.Model(inputs, keras.layers.Dense(10)(
        keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="first layer 'Flatten'"):
        th.ThermometerTrainer(plain, attack)
    h = ThermometerEncoding(LEVELS)(BitDepthReduction(4)(inputs))
    squeezed = keras.Model(inputs, keras.layers.Dense(10)(
        keras.layers.Flatten()(h)))
    with pytest.raises(ValueError, match="BitDepthReduction"):
        th.ls_pga(squeezed, np.zeros((1, 28, 28, 1), "float32"), None,
                  eps=EPS, steps=1)


# -- BPDA: attacks.bpda.with_straight_through --------------------------------

def _input_grad(model, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x, training=False))
    return tape.gradient(loss, x)


def test_straight_through_clone_is_exact_and_has_gradients(trained):
    net = trained[0]
    clone = with_straight_through(net)
    x = np.random.default_rng(4).uniform(size=(8, 28, 28, 1)).astype(
        "float32")
    np.testing.assert_array_equal(net(x), clone(x))
    assert [id(w) for w in clone.weights] == [id(w) for w in net.weights]
    assert clone.layers[1].get_config()["surrogate"] == "soft"
    assert net.layers[1].get_config()["surrogate"] == "none"
    assert _input_grad(net, x) is None
    grad = _input_grad(clone, x).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0


def test_bpda_pgd_breaks_the_original_model(trained):
    net, x, y = trained
    clean = _accuracy(net, x, y)
    with pytest.raises(ValueError, match="bpda"):
        attacks.pgd(net, x, y, eps=EPS, step_size=0.01, steps=2)
    x_adv = attacks.pgd(with_straight_through(net), x, y, eps=EPS,
                        step_size=0.02, steps=10, seed=0)
    assert float(np.abs(x_adv - x).max()) <= EPS + 1e-6
    assert _accuracy(net, x_adv, y) < clean - 0.4


def test_identity_straight_through_for_squeezers():
    inputs = keras.Input((4, 4, 1))
    dense = keras.layers.Dense(3)
    net = keras.Model(inputs, dense(keras.layers.Flatten()(
        BitDepthReduction(bits=2)(inputs))))
    clone = with_straight_through(net)
    x = np.random.default_rng(5).uniform(size=(3, 4, 4, 1)).astype("float32")
    np.testing.assert_array_equal(net(x), clone(x))
    # identity backward: d sum(W^T flatten(x) + b) / dx = row sums of W
    want = np.broadcast_to(dense.kernel.numpy().sum(1).reshape(4, 4, 1),
                           x.shape)
    np.testing.assert_allclose(_input_grad(clone, x), want, rtol=1e-6)


def test_straight_through_refuses_subclassed_models():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Functional or Sequential"):
        with_straight_through(Net())
