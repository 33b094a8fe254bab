"""MagNet (models/detection/magnet.py, training/detection/magnet.py)
against numpy / scipy references."""

import keras
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax

from core import backends
from models.detection import load_system
from models.detection.magnet import (JensenShannonDivergence,
                                     ReconstructionError, magnet_autoencoder,
                                     magnet_system)
from training.detection.magnet import fit_magnet

SHAPE = (8, 8, 1)


def _images(n=6, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).uniform(
        size=(n, *shape)).astype("float32")


def _classifier(shape=SHAPE, classes=4):
    keras.utils.set_random_seed(3)
    x = keras.Input(shape)
    h = keras.layers.Flatten()(x)
    return keras.Model(x, keras.layers.Dense(classes, name="logits")(h))


def _system(temperatures=(10, 40)):
    keras.utils.set_random_seed(4)
    return magnet_system(_classifier(), magnet_autoencoder("I", SHAPE),
                         magnet_autoencoder("II", SHAPE), temperatures)


@pytest.mark.parametrize("temperature", [1.0, 10.0, 40.0])
def test_jsd_matches_scipy(temperature):
    rng = np.random.default_rng(1)
    a = rng.normal(scale=5.0, size=(5, 10)).astype("float32")
    b = rng.normal(scale=5.0, size=(5, 10)).astype("float32")
    a[0, 0], b[0, 1] = 300.0, 300.0  # saturated softmaxes stay finite
    got = np.asarray(JensenShannonDivergence(temperature)([a, b]))
    p, q = softmax(a / temperature, -1), softmax(b / temperature, -1)
    # scipy returns the distance, the square root of the divergence (base e)
    want = jensenshannon(p, q, axis=-1) ** 2
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-4, atol=1e-6)
    assert np.all(got <= np.log(2.0) + 1e-6)
    np.testing.assert_allclose(
        np.asarray(JensenShannonDivergence(temperature)([a, a])), 0.0,
        atol=1e-6)


@pytest.mark.parametrize("norm", ["1", "2"])
def test_reconstruction_error_matches_numpy(norm):
    x, x_rec = _images(seed=1), _images(seed=2)
    got = np.asarray(ReconstructionError(norm)([x, x_rec]))
    diff = (x - x_rec).reshape(len(x), -1)
    want = np.linalg.norm(diff, ord=int(norm), axis=1)
    assert got.shape == (len(x), 1)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-5)


def test_layers_config_round_trip_and_errors():
    for layer in (ReconstructionError("1"), JensenShannonDivergence(40)):
        clone = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer))
        assert type(clone) is type(layer)
        assert clone.get_config() == layer.get_config()
        assert layer.differentiable and not layer.randomized
    with pytest.raises(ValueError, match="norm must be one of"):
        ReconstructionError("inf")
    with pytest.raises(ValueError, match="temperature must be"):
        JensenShannonDivergence(0)
    with pytest.raises(ValueError, match="structure must be one of"):
        magnet_autoencoder("III")


def test_autoencoders_follow_the_paper():
    ae1, ae2 = magnet_autoencoder("I"), magnet_autoencoder("II")
    # 3x3 convs of 3 filters (+ the 1-channel output), sigmoid throughout
    assert ae1.count_params() == 30 + 84 + 84 + 84 + 28
    assert ae2.count_params() == 30 + 84 + 28
    convs = [l for l in ae1.layers if isinstance(l, keras.layers.Conv2D)]
    assert all(c.activation.__name__ == "sigmoid" for c in convs)
    assert all(c.activity_regularizer.l2 == pytest.approx(1e-9)
               for c in convs)
    assert any(isinstance(l, keras.layers.AveragePooling2D)
               for l in ae1.layers)
    out = np.asarray(ae1(_images(2, (28, 28, 1))))
    assert out.shape == (2, 28, 28, 1) and out.min() > 0 and out.max() < 1


def test_detector_and_reformer_wiring():
    system = _system()
    assert system.names == ["recon_l2_ae1", "recon_l1_ae2", "jsd_T10",
                            "jsd_T40"]
    assert system.differentiable and not system.randomized
    x = _images()
    ae1 = system.components["autoencoder_1"]
    ae2 = system.components["autoencoder_2"]
    f = system.components["base"]
    r1, r2 = np.asarray(ae1(x)), np.asarray(ae2(x))
    z, z_rec = np.asarray(f(x)), np.asarray(f(r1))
    want = np.stack([
        np.linalg.norm((x - r1).reshape(len(x), -1), axis=1),
        np.abs(x - r2).reshape(len(x), -1).sum(1),
        jensenshannon(softmax(z / 10, -1), softmax(z_rec / 10, -1),
                      axis=-1) ** 2,
        jensenshannon(softmax(z / 40, -1), softmax(z_rec / 40, -1),
                      axis=-1) ** 2], axis=1)
    np.testing.assert_allclose(system.scores(x), want, rtol=1e-4,
                               atol=1e-7)
    # the reformer: the system classifies ae_1(x)
    np.testing.assert_allclose(system.logits(x), z_rec, rtol=1e-5,
                               atol=1e-6)
    assert _system(()).names == ["recon_l2_ae1", "recon_l1_ae2"]


def test_decision_rule_and_gradient():
    system = _system()
    x = _images(4)
    scores = system.scores(x)
    system.thresholds = np.median(scores, axis=0)
    want = [any(s > t for s, t in zip(row, system.thresholds))
            for row in scores]
    np.testing.assert_array_equal(system.rejected(scores), want)
    _, _, grad = backends.value_and_grad(
        lambda v: (keras.ops.sum(system.detector(v)), None),
        keras.ops.convert_to_tensor(x))
    grad = keras.ops.convert_to_numpy(grad)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_bad_autoencoder_and_temperatures():
    f = _classifier()
    with pytest.raises(ValueError, match="ae_1 must map images"):
        magnet_system(f, magnet_autoencoder("I"), magnet_autoencoder(
            "II", SHAPE))
    with pytest.raises(ValueError, match="temperatures must be distinct"):
        magnet_system(f, magnet_autoencoder("I", SHAPE),
                      magnet_autoencoder("II", SHAPE), (10, 10))


def test_save_load_round_trip(tmp_path):
    system = _system()
    x = _images(24, seed=5)
    system.calibrate(x, fpr=0.1)
    system.save(tmp_path / "magnet")
    loaded = load_system(tmp_path / "magnet")
    assert loaded.kind == "magnet" and loaded.names == system.names
    np.testing.assert_array_equal(loaded.thresholds, system.thresholds)
    np.testing.assert_allclose(loaded.scores(x), system.scores(x),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loaded.logits(x), system.logits(x),
                               rtol=1e-6, atol=1e-7)
    assert sorted(loaded.components) == ["autoencoder_1", "autoencoder_2",
                                         "base"]
    assert loaded.config["temperatures"] == [10.0, 40.0]


def test_fit_magnet_quick(fmnist_test):
    x, x_val = fmnist_test[0][:256], fmnist_test[0][256:384]
    f = _classifier((28, 28, 1), 10)
    system = fit_magnet(f, x, None, x_val=x_val, epochs=1, batch_size=32,
                        seed=0, verbose=0)
    train = system.config["training"]
    assert train["num_train"] == 256 and train["epochs"] == 1
    assert np.isfinite(train["autoencoder_2"]["val_loss"])
    # fit_magnet initializes autoencoder I under seed + 1: training lowers
    # its reconstruction error on held-out images
    keras.utils.set_random_seed(1)
    untrained = magnet_autoencoder("I")
    mse = [np.mean((np.asarray(ae(x_val)) - x_val) ** 2)
           for ae in (system.components["autoencoder_1"], untrained)]
    assert mse[0] < mse[1]
