"""LS-PGA adversarial training (training.thermometer_at, Buckman et al.
2018): the step trains on LS-PGA examples, serialization round trip and
bad configs, on the session fixture `thermometer_net` (a thermometer CNN
trained on real Fashion-MNIST)."""

import keras
import numpy as np
import pytest

from layers import ThermometerEncoding
from tests.attacks.thermometer_net import EPS, LEVELS, thermometer_cnn
from training import thermometer_at as th


def _trainer(net, alpha=0.5, steps=2):
    model = th.ThermometerTrainer(
        net, {"name": "ls_pga", "eps": EPS, "steps": steps, "seed": 0},
        alpha=alpha)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True), metrics=["accuracy"])
    return model


def test_train_step_trains_on_adversarial_codes(thermometer_net):
    trained, x, y = thermometer_net
    net = keras.models.clone_model(trained)
    net.set_weights(trained.get_weights())
    x, y = x[:32], y[:32]
    model = _trainer(net)
    x_mix, y_mix, w = model.adversarial_batch((x, y))
    enc = ThermometerEncoding(LEVELS)
    np.testing.assert_array_equal(x_mix[:32], x)
    codes_adv, codes = np.asarray(enc(x_mix[32:])), np.asarray(enc(x))
    assert np.mean(np.any(codes_adv != codes, -1)) > 0.05
    np.testing.assert_array_equal(y_mix, np.concatenate([y, y]))
    np.testing.assert_allclose(w, np.ones(64))  # 2 * 0.5 each
    before = [v.numpy() for v in net.trainable_variables]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(a, v.numpy())
               for a, v in zip(before, net.trainable_variables))
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    only_adv = _trainer(net, alpha=0.0).adversarial_batch((x, y))
    assert only_adv[0].shape == x.shape


def test_trainer_serialization_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = th.ThermometerTrainer(
        thermometer_cnn(), {"name": "ls_pga", "eps": EPS, "steps": 2, "seed": 0})
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
        th.ThermometerTrainer(thermometer_cnn(), attack, alpha)


def test_network_without_leading_thermometer_is_refused():
    attack = {"name": "ls_pga", "eps": EPS, "steps": 2}
    inputs = keras.Input((28, 28, 1))
    plain = keras.Model(inputs, keras.layers.Dense(10)(
        keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="first layer 'Flatten'"):
        th.ThermometerTrainer(plain, attack)
