"""He et al. 2017's ensemble of unrelated detectors (arXiv 1706.04701):
the KDE score against scikit-learn / SciPy references, the detector columns
against their parts, the decision rule, save/load, and a quick fit."""

import keras
import numpy as np
import pytest
from keras import ops
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KernelDensity

import models
from core import backends
from models.detection import load_system
from models.detection.unrelated_detectors import (
    NAMES, KernelDensityScore, feature_model, gong_binary_cnn,
    metzen_detector, metzen_detector_head, unrelated_detectors_system)
from training.detection.unrelated_detectors import (adversarial_examples,
                                                    fit_unrelated_detectors)


def _kde_reference(z, logits, ref, labels, h):
    """-log KDE density with SciPy's logsumexp, one row at a time."""
    out = []
    for zi, li in zip(z, logits):
        members = ref[labels == np.argmax(li)]
        d2 = np.sum((members - zi) ** 2, axis=-1)
        dim = ref.shape[1]
        log_p = (logsumexp(-d2 / (2 * h * h)) - np.log(len(members))
                 - 0.5 * dim * np.log(2 * np.pi * h * h))
        out.append(-log_p)
    return np.array(out)


def _kde_layer(ref, labels, num_classes, h):
    layer = KernelDensityScore(len(ref), num_classes, h)
    layer.build([(None, ref.shape[1]), (None, num_classes)])
    layer.set_reference(ref, labels)
    return layer


def test_kde_matches_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(13, 5)).astype("float32")
    labels = np.array([0] * 6 + [1] * 2 + [2] * 5)  # unequal class counts
    z = rng.normal(size=(7, 5)).astype("float32")
    logits = rng.normal(size=(7, 3)).astype("float32")
    h = 0.7
    got = ops.convert_to_numpy(_kde_layer(ref, labels, 3, h)([z, logits]))
    assert got.shape == (7, 1) and got.dtype == np.float32
    want = _kde_reference(z, logits, ref, labels, h)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-5, atol=1e-4)
    sk = np.array([-KernelDensity(bandwidth=h).fit(
        ref[labels == np.argmax(li)]).score_samples(zi[None])[0]
        for zi, li in zip(z, logits)])
    np.testing.assert_allclose(got[:, 0], sk, rtol=1e-5, atol=1e-4)


def test_kde_gradient_is_the_analytic_one():
    # d(-log p)/dz = sum_i w_i (z - z_i) / h^2, w = softmax over the class.
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(8, 4)).astype("float32")
    labels = np.arange(8) % 2
    z = rng.normal(size=(3, 4)).astype("float32")
    logits = np.array([[1, 0], [0, 1], [2, 0]], "float32")
    h = 1.2
    layer = _kde_layer(ref, labels, 2, h)

    def objective(v):
        s = layer([v, ops.convert_to_tensor(logits)])
        return ops.sum(s), s

    _, _, grad = backends.value_and_grad(objective, ops.convert_to_tensor(z))
    want = []
    for zi, li in zip(z, logits):
        m = ref[labels == np.argmax(li)]
        a = -np.sum((m - zi) ** 2, -1) / (2 * h * h)
        w = np.exp(a - logsumexp(a))
        want.append(np.sum(w[:, None] * (zi - m), 0) / (h * h))
    np.testing.assert_allclose(ops.convert_to_numpy(grad), np.array(want),
                               rtol=1e-4, atol=1e-5)


def test_kde_layer_config_and_errors():
    layer = KernelDensityScore(10, 3, 0.5, name="kde")
    clone = KernelDensityScore.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert KernelDensityScore.differentiable is True
    assert KernelDensityScore.randomized is False
    for kwargs in ({"points": 0, "num_classes": 3},
                   {"points": 4, "num_classes": 3, "bandwidth": 0.0},
                   {"points": 4, "num_classes": 3, "bandwidth": float("nan")},
                   {"points": 4, "num_classes": True}):
        with pytest.raises(ValueError):
            KernelDensityScore(**kwargs)
    built = _kde_layer(np.zeros((4, 2), "float32"), np.array([0, 1, 2, 2]),
                       3, 1.0)
    with pytest.raises(ValueError, match="classes \\[1\\] have none"):
        built.set_reference(np.zeros((4, 2)), np.array([0, 0, 2, 2]))
    with pytest.raises(ValueError, match="in \\[0, 3\\)"):
        built.set_reference(np.zeros((4, 2)), np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="shape"):
        built.set_reference(np.zeros((5, 2)), np.arange(5) % 3)


@pytest.fixture(scope="module")
def tiny():
    """A random width-2 Madry CNN, tiny detectors and a KDE reference set;
    returns `(classifier, gong, head, ref, labels, x)`."""
    keras.utils.set_random_seed(0)
    clf = models.madry_cnn.madry_cnn(num_classes=10, width=2)
    gong = gong_binary_cnn(width=2, hidden=8)
    head = metzen_detector_head(clf.get_layer("pool2").output.shape[1:],
                                filters=(4, 4, 4))
    rng = np.random.default_rng(0)
    ref_x = rng.uniform(size=(30, 28, 28, 1)).astype("float32")
    ref = feature_model(clf, ["fc"]).predict(ref_x, verbose=0)
    labels = np.arange(30) % 10
    x = rng.uniform(size=(6, 28, 28, 1)).astype("float32")
    return clf, gong, head, ref, labels, x


def test_columns_are_the_three_detectors(tiny):
    clf, gong, head, ref, labels, x = tiny
    system = unrelated_detectors_system(clf, gong, head, ref, labels, 1.2)
    assert system.kind == "unrelated_detectors"
    assert system.names == list(NAMES) == ["gong", "metzen", "kde"]
    assert system.classifier is clf
    assert system.differentiable and not system.randomized
    scores = system.scores(x)
    assert scores.shape == (6, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[:, 0], gong.predict(x, verbose=0)[:, 0],
                               rtol=1e-5, atol=1e-6)
    # Metzen reads the output of the classifier's second conv block.
    inner = keras.Model(clf.inputs, clf.get_layer("pool2").output)
    want = head.predict(inner.predict(x, verbose=0), verbose=0)[:, 0]
    np.testing.assert_allclose(scores[:, 1], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        metzen_detector(clf, head).predict(x, verbose=0)[:, 0], want,
        rtol=1e-5, atol=1e-6)
    z = feature_model(clf, ["fc"]).predict(x, verbose=0)
    kde = _kde_reference(z, clf.predict(x, verbose=0), ref, labels, 1.2)
    np.testing.assert_allclose(scores[:, 2], kde, rtol=1e-5, atol=1e-3)


def test_decision_rule_hand_computed(tiny):
    clf, gong, head, ref, labels, x = tiny
    system = unrelated_detectors_system(clf, gong, head, ref, labels)
    s = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 9.0],
                  [1.0, 1.0, 5.0]], "float32")
    system.thresholds = np.array([1.0, 0.5, 5.0], "float32")
    # Rejected when ANY score exceeds its threshold (strictly).
    np.testing.assert_array_equal(system.rejected(s),
                                  [False, True, True, True])
    system.thresholds = np.array([2.0, 1.0, 9.0], "float32")
    np.testing.assert_array_equal(system.rejected(s), [False] * 4)


def test_bad_arguments(tiny):
    clf, gong, head, ref, labels, _ = tiny
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        unrelated_detectors_system(clf, gong, head, ref, labels,
                                   metzen_layer="conv9")
    with pytest.raises(ValueError, match="'pool1' gives"):
        unrelated_detectors_system(clf, gong, head, ref, labels,
                                   metzen_layer="pool1")
    with pytest.raises(ValueError, match="gong must map"):
        unrelated_detectors_system(clf, head, head, ref, labels)
    with pytest.raises(ValueError, match="shape"):
        unrelated_detectors_system(clf, gong, head, ref[:, :5], labels)
    with pytest.raises(ValueError, match="have none"):
        unrelated_detectors_system(clf, gong, head, ref, labels % 9)
    with pytest.raises(ValueError, match="pools"):
        metzen_detector_head((7, 7, 4), pools=3)
    with pytest.raises(ValueError, match="width"):
        gong_binary_cnn(width=0)


def test_save_load_round_trip(tiny, tmp_path):
    clf, gong, head, ref, labels, x = tiny
    system = unrelated_detectors_system(clf, gong, head, ref, labels, 1.2)
    rng = np.random.default_rng(2)
    system.calibrate(rng.uniform(size=(40, 28, 28, 1)).astype("float32"),
                     fpr=0.1)
    system.save(tmp_path / "system")
    loaded = load_system(tmp_path / "system")
    assert loaded.kind == system.kind and loaded.names == system.names
    assert loaded.config == system.config
    assert loaded.differentiable and not loaded.randomized
    np.testing.assert_array_equal(loaded.thresholds, system.thresholds)
    np.testing.assert_array_equal(loaded.scales, system.scales)
    a, b = system.predict(x), loaded.predict(x)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[2], b[2], rtol=1e-6, atol=1e-6)


def test_quick_fit_separates_fgsm():
    from data.fashion_mnist import load_fashion_mnist

    keras.utils.set_random_seed(0)
    x, y = load_fashion_mnist("train")
    x = x[:1400, ..., None].astype("float32") / 255.0
    y = y[:1400].astype("int32")
    clf = models.madry_cnn.madry_cnn(num_classes=10, width=4)
    clf.compile(optimizer=keras.optimizers.Adam(2e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
    clf.fit(x[:1000], y[:1000], batch_size=50, epochs=1, verbose=0)
    before = [w.copy() for w in clf.get_weights()]

    # Held-out images (never trained on) of the same count as the training
    # ones, so the attack loop compiles once.
    x_held, y_held = x[1000:1400], y[1000:1400]
    system = fit_unrelated_detectors(
        clf, x[:400], y[:400], x_val=x_held, y_val=y_held, num_train=400,
        epochs=8, batch_size=50, learning_rate=3e-3, kde_per_class=10,
        gong_width=4, metzen_filters=(16, 16, 16), verbose=0)
    for w0, w1 in zip(before, clf.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    assert system.config["attack"] == "fgsm" and system.config["eps"] == 0.1
    assert system.config["kde_points_per_class"] == [10] * 10
    for name in ("gong", "metzen"):
        assert system.config["val_accuracy"][name] > 0.7, system.config

    x_adv = adversarial_examples(clf, x_held, y_held, eps=0.1)
    assert np.max(np.abs(x_adv - x_held)) <= 0.1 + 1e-6
    s_clean, s_adv = system.scores(x_held), system.scores(x_adv)
    assert np.all(np.isfinite(s_clean)) and np.all(np.isfinite(s_adv))
    truth = np.r_[np.zeros(len(x_held)), np.ones(len(x_held))]
    for col, name in enumerate(("gong", "metzen")):
        auc = roc_auc_score(truth, np.r_[s_clean[:, col], s_adv[:, col]])
        assert auc > 0.75, (name, auc)
