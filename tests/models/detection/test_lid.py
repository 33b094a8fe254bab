"""LID detector (models/detection/lid.py, training/detection/lid.py) against
a numpy reference of the MLE and scikit-learn's logistic regression."""

import keras
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

import attacks
import models
from core import backends
from models.detection import load_system
from models.detection.lid import (LocalIntrinsicDimensionality,
                                  default_layer_names, lid_feature_model,
                                  lid_system)
from training.detection.lid import fit_lid

SHAPE = (8, 8, 1)


def _mle(x, ref, k):
    """Ma et al. 2018, Eq. 3, over the k nearest non-identical points."""
    out = []
    for row in cdist(x.reshape(len(x), -1), ref.reshape(len(ref), -1)):
        r = np.sort(row[row > 1e-6])[:k]
        out.append(-1.0 / np.mean(np.log(r / r[-1])))
    return np.array(out)


def _classifier(shape=SHAPE, classes=3):
    keras.utils.set_random_seed(3)
    x = keras.Input(shape, name="image")
    h = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(x)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(5, activation="relu", name="fc")(h)
    return keras.Model(x, keras.layers.Dense(classes, name="logits")(h))


def _images(n, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).uniform(
        size=(n, *shape)).astype("float32")


@pytest.mark.parametrize("k", [2, 5, 20])
def test_lid_matches_numpy_mle(k):
    rng = np.random.default_rng(k)
    ref = rng.normal(size=(30, 4, 3)).astype("float32")
    # the last 3 inputs belong to the reference: their zero distance is out
    x = np.concatenate([rng.normal(size=(6, 4, 3)), ref[:3]]).astype(
        "float32")
    layer = LocalIntrinsicDimensionality(k, 30)
    layer.build((None, 4, 3))
    layer.set_reference(ref)
    got = np.asarray(layer(x))
    assert got.shape == (9, 1)
    np.testing.assert_allclose(got[:, 0], _mle(x, ref, k), rtol=2e-4)
    # a single input's score does not depend on its batch
    np.testing.assert_allclose(np.asarray(layer(x[4:5])), got[4:5],
                               rtol=1e-5)


def test_lid_gradient_is_finite():
    ref = _images(12, (5,), seed=1)
    layer = LocalIntrinsicDimensionality(4, 12)
    layer.build((None, 5))
    layer.set_reference(ref)
    x = keras.ops.convert_to_tensor(np.r_[_images(2, (5,)), ref[:1]])
    _, _, grad = backends.value_and_grad(
        lambda v: (keras.ops.sum(layer(v)), None), x)
    grad = keras.ops.convert_to_numpy(grad)
    assert np.all(np.isfinite(grad)) and np.all(np.any(grad != 0, axis=1))


def test_layer_config_and_errors():
    layer = LocalIntrinsicDimensionality(7, 40, zero_rtol=1e-6)
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert clone.get_config() == layer.get_config()
    assert layer.differentiable and not layer.randomized
    with pytest.raises(ValueError, match="k must be < num_reference"):
        LocalIntrinsicDimensionality(20, 20)
    with pytest.raises(ValueError, match="k must be an int >= 2"):
        LocalIntrinsicDimensionality(1, 20)
    layer.build((None, 3))
    with pytest.raises(ValueError, match="reference must have shape"):
        layer.set_reference(np.zeros((40, 4)))


def test_default_layers_of_the_madry_cnn():
    net = models.create_model("madry_cnn", num_classes=10, width=2)
    assert default_layer_names(net) == [
        net.layers[0].name, "conv1", "pool1", "conv2", "pool2", "fc",
        "logits"]
    with pytest.raises(ValueError, match="layer_names must be"):
        lid_feature_model(net, ["conv9"], _images(3, (28, 28, 1)), 2)


def _fitted_system():
    f = _classifier()
    names = ["image", "conv", "fc", "logits"]
    ref, x = _images(25, seed=1), _images(40, seed=2)
    feats = lid_feature_model(f, names, ref, 5).predict(x, verbose=0)
    np.testing.assert_allclose(feats[:, 0], _mle(x, ref, 5), rtol=2e-4)
    labels = np.arange(40) % 2
    scaler = StandardScaler().fit(feats)
    reg = LogisticRegression().fit(scaler.transform(feats), labels)
    system = lid_system(f, names, ref, 5, scaler, reg.coef_, reg.intercept_)
    return system, x, reg.decision_function(scaler.transform(feats))


def test_keras_regression_equals_sklearn():
    system, x, want = _fitted_system()
    assert system.names == ["lid"] and system.kind == "lid"
    assert system.differentiable and not system.randomized
    scores = system.scores(x)
    assert scores.shape == (40, 1)
    np.testing.assert_allclose(scores[:, 0], want, rtol=1e-4, atol=1e-4)
    # the decision rule: reject above the threshold
    system.thresholds = np.array([np.median(want)], np.float32)
    np.testing.assert_array_equal(system.rejected(scores),
                                  scores[:, 0] > np.median(want))
    with pytest.raises(ValueError, match="one value per layer"):
        lid_system(system.classifier, ["conv"], _images(25), 5,
                   StandardScaler().fit(np.zeros((3, 2))), [1.0, 2.0], 0.0)


def test_save_load_round_trip(tmp_path):
    system, x, _ = _fitted_system()
    system.calibrate(x, fpr=0.1)
    system.save(tmp_path / "lid")
    loaded = load_system(tmp_path / "lid")
    assert loaded.kind == "lid" and loaded.config["k"] == 5
    np.testing.assert_array_equal(loaded.arrays["reference_images"],
                                  system.arrays["reference_images"])
    np.testing.assert_allclose(loaded.scores(x), system.scores(x),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.rejected(loaded.scores(x)),
                                  system.rejected(system.scores(x)))


def test_fit_separates_pgd_from_clean():
    from data.fashion_mnist import load_fashion_mnist

    x, y = load_fashion_mnist("train")
    x, y = x[:4800, ..., None].astype("float32") / 255.0, y[:4800]
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu",
                            name="conv")(inp)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(64, activation="relu", name="fc")(h)
    net = keras.Model(inp, keras.layers.Dense(10, name="logits")(h))
    net.compile(optimizer=keras.optimizers.Adam(3e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
    net.fit(x[:4000], y[:4000], batch_size=100, epochs=4, verbose=0)
    system = fit_lid(net, x[4000:4500], y[4000:4500], reference_size=200,
                     seed=0, verbose=0)
    assert system.config["layer_names"] == ["image", "conv", "fc", "logits"]
    # held-out: correctly classified clean vs successful PGD examples
    xv, yv = x[4500:], y[4500:]
    xa = np.asarray(attacks.pgd(net, xv, yv, eps=0.1, step_size=0.025,
                                steps=10, seed=1))
    right = np.argmax(system.logits(xv), -1) == yv
    fooled = right & (np.argmax(system.logits(xa), -1) != yv)
    clean, adv = system.scores(xv)[right, 0], system.scores(xa)[fooled, 0]
    auc = roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(adv))],
                        np.r_[clean, adv])
    assert fooled.sum() > 50 and auc > 0.7
