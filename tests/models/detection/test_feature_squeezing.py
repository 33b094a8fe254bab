"""Tests for models/detection/feature_squeezing.py and its (trivial) fit."""

import keras
import numpy as np
import pytest
import scipy.ndimage

from models.detection import load_system
from models.detection.feature_squeezing import (SoftmaxL1Distance,
                                                SymmetricPad2D,
                                                feature_squeezing_system,
                                                squeeze)
from training.detection.feature_squeezing import fit_feature_squeezing


def _linear(shape=(4, 4, 1), classes=3, seed=0):
    """A linear softmax classifier with known weights: logits = x W + b."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 2.0, (int(np.prod(shape)), classes)).astype("float32")
    b = rng.normal(0, 0.5, classes).astype("float32")
    inputs = keras.Input(shape)
    dense = keras.layers.Dense(classes)
    net = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w, b])
    return net, w, b


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _reference_scores(x, w, b):
    """Numpy: L1 distances for bit depth 1 and the authors' 2x2 median
    (scipy median_filter, mode="reflect"), per example."""
    def probs(v):
        return _softmax(v.reshape(len(v), -1) @ w + b)
    p = probs(x)
    bit = np.round(x)
    med = scipy.ndimage.median_filter(x, size=(1, 2, 2, 1), mode="reflect")
    return (np.abs(p - probs(bit)).sum(-1), np.abs(p - probs(med)).sum(-1))


def _images(n=6, shape=(4, 4, 1), seed=1):
    return np.random.default_rng(seed).uniform(size=(n, *shape)).astype(
        "float32")


def test_hand_computed_scores():
    net, w, b = _linear()
    x = _images()
    bit, med = _reference_scores(x, w, b)
    joint = feature_squeezing_system(net)
    assert joint.names == ["feature_squeezing"]
    assert joint.classifier is net
    np.testing.assert_allclose(joint.scores(x)[:, 0], np.maximum(bit, med),
                               rtol=1e-5, atol=1e-6)
    for name, want in (("bit_depth_1", bit), ("median_2x2", med)):
        alone = feature_squeezing_system(net, (name,), name=name)
        assert alone.names == [name]
        np.testing.assert_allclose(alone.scores(x)[:, 0], want, rtol=1e-5,
                                   atol=1e-6)
    # The reference really differs between squeezers (a meaningful max).
    assert np.any(bit > med) and np.any(med > bit)


def test_median_border_matches_authors_scipy_reflect():
    x = _images(2, (7, 6, 3))
    for size in ((2, 2), (3, 3), (3, 2), (1, 4)):
        want = scipy.ndimage.median_filter(x, size=(1, *size, 1),
                                           mode="reflect")
        got = np.asarray(squeeze(x, f"median_{size[0]}x{size[1]}"))
        np.testing.assert_array_equal(got, want)


def test_flags():
    net, _, _ = _linear()
    joint = feature_squeezing_system(net)
    assert (joint.differentiable, joint.randomized) == (False, False)
    med = feature_squeezing_system(net, ("median_2x2",))
    assert (med.differentiable, med.randomized) == (True, False)
    assert SymmetricPad2D.differentiable and SoftmaxL1Distance.differentiable


@pytest.mark.parametrize("bad", [(), ("bit_depth_9",), ("median_2",),
                                 ("gauss",), ("bit_depth_1", "bit_depth_1")])
def test_bad_squeezers(bad):
    net, _, _ = _linear()
    with pytest.raises(ValueError, match="squeezer"):
        feature_squeezing_system(net, bad)


def test_bad_padding():
    with pytest.raises(ValueError, match="padding"):
        SymmetricPad2D(((1, -1), (0, 0)))


def test_layer_configs_round_trip():
    for layer in (SymmetricPad2D(((1, 0), (2, 1))), SoftmaxL1Distance()):
        clone = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer))
        assert type(clone) is type(layer)
        assert clone.get_config() == layer.get_config()


def test_save_load_round_trip(tmp_path):
    net, _, _ = _linear()
    system = feature_squeezing_system(net)
    x = _images(40)
    system.calibrate(x, fpr=0.1)
    system.save(tmp_path / "fs")
    loaded = load_system(tmp_path / "fs")
    assert loaded.kind == "feature_squeezing"
    assert loaded.names == system.names
    assert loaded.config["squeezers"] == ["bit_depth_1", "median_2x2"]
    np.testing.assert_array_equal(loaded.thresholds, system.thresholds)
    np.testing.assert_array_equal(loaded.scores(x), system.scores(x))
    np.testing.assert_array_equal(loaded.logits(x), system.logits(x))
    assert (loaded.differentiable, loaded.randomized) == (False, False)


def test_fit_on_real_images(fmnist_test):
    """A linear classifier trained briefly on 300 real images; the fit only
    builds the system, which then calibrates to its FPR on held-out ones."""
    x, y = fmnist_test
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(10)])
    net.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
    net.fit(x[:300], y[:300], epochs=2, batch_size=100, verbose=0)
    system = fit_feature_squeezing(net, x[:300], y[:300], verbose=0)
    assert system.classifier is net and system.thresholds is None
    rate = system.calibrate(x[300:700], fpr=0.05)
    assert abs(rate - 0.05) < 0.01
    scores = system.scores(x[700:])
    assert np.all((scores >= 0) & (scores <= 2))
