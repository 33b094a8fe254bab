"""Tests for models/detection/specialists.py and its training."""

import keras
import numpy as np
import pytest

from models.detection import load_system
from models.detection.specialists import (EmbedClasses, SpecialistsVote,
                                          class_sets_from_confusion,
                                          specialist_cnn, specialists_system)
from training.detection.specialists import (fit_specialists,
                                            generalist_confusion)


def _sets(*groups, k=3):
    out = np.zeros((len(groups), k), bool)
    for row, group in zip(out, groups):
        row[list(group)] = True
    return out


def _logits(probs):
    """Member logits whose softmax is `probs` (zeros -> -1e9)."""
    p = np.asarray(probs, np.float64)
    return np.where(p > 0, np.log(np.maximum(p, 1e-300)), -1e9).astype(
        "float32")


def _vote(probs, sets, mode):
    layer = SpecialistsVote(sets.tolist(), mode)
    return np.asarray(layer(_logits(probs)[None]))[0]


# -- class sets ------------------------------------------------------------
def test_class_sets_from_hand_made_confusion():
    conf = np.array([[50, 8, 2, 0],    # 8 of 10 errors: U_0 = {0, 1}
                     [0, 40, 0, 0],    # no errors: U_1 = {1}, dropped
                     [2, 2, 30, 0],    # tie 2/2 of 4 errors: {0, 1, 2}
                     [0, 0, 9, 20]])   # U_3 = {2, 3} (= not U_0, merged)
    got = class_sets_from_confusion(conf, 0.8)
    want = _sets({0, 1}, {0, 1, 2}, {2, 3}, {0, 2, 3}, k=4)
    np.testing.assert_array_equal(got, want)
    # Full coverage takes every confusing class of a row.
    np.testing.assert_array_equal(class_sets_from_confusion(conf, 1.0)[0],
                                  [True, True, True, False])


@pytest.mark.parametrize("conf, cov, match", [
    (np.ones((3, 2)), 0.8, "square"), (-np.ones((3, 3)), 0.8, "counts"),
    (np.ones((3, 3)), 0.0, "coverage"), (np.ones((3, 3)), 1.5, "coverage")])
def test_class_sets_bad_input(conf, cov, match):
    with pytest.raises(ValueError, match=match):
        class_sets_from_confusion(conf, cov)


# -- vote ------------------------------------------------------------------
SETS = _sets({0, 1, 2}, {0, 1}, {1, 2})   # generalist, two specialists


def test_vote_unanimous_case():
    # Class 0's holders (generalist, specialist {0,1}) both predict 0, so
    # only they vote: mean of [.6,.3,.1] and [.8,.2,0].
    probs = [[0.6, 0.3, 0.1], [0.8, 0.2, 0.0], [0.0, 0.3, 0.7]]
    np.testing.assert_allclose(_vote(probs, SETS, "probs"),
                               [0.7, 0.25, 0.05], atol=1e-6)
    np.testing.assert_allclose(_vote(probs, SETS, "doubt"), [0.3],
                               atol=1e-6)
    np.testing.assert_allclose(_vote(probs, SETS, "log_probs"),
                               np.log([0.7, 0.25, 0.05]), atol=1e-5)


def test_vote_fallback_case():
    # No class has all its holders agreeing: every member votes.
    probs = [[0.5, 0.4, 0.1], [0.3, 0.7, 0.0], [0.0, 0.45, 0.55]]
    want = np.array([0.8, 1.55, 0.65]) / 3
    got = _vote(probs, SETS, "probs")
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.argmax(got) == 1
    np.testing.assert_allclose(_vote(probs, SETS, "doubt"),
                               [1 - 1.55 / 3], atol=1e-6)


def test_vote_ignores_logits_outside_sets_and_batches():
    probs = [[0.6, 0.3, 0.1], [0.8, 0.2, 0.0], [0.0, 0.3, 0.7]]
    z = _logits(probs)
    z[1, 2], z[2, 0] = 50.0, 50.0          # garbage outside the sets
    other = _logits([[0.5, 0.4, 0.1], [0.3, 0.7, 0.0], [0.0, 0.45, 0.55]])
    out = np.asarray(SpecialistsVote(SETS.tolist())(np.stack([z, other])))
    np.testing.assert_allclose(out, [[0.7, 0.25, 0.05],
                                     np.array([0.8, 1.55, 0.65]) / 3],
                               atol=1e-6)


def test_vote_without_generalist_takes_lowest_unanimous_class():
    sets = _sets({0, 1}, {2, 3}, k=4)
    probs = [[0.9, 0.1, 0, 0], [0, 0, 0.6, 0.4]]
    np.testing.assert_allclose(_vote(probs, sets, "probs"),
                               [0.9, 0.1, 0, 0], atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"class_sets": [[1, 1]], "mode": "logits"}, "mode"),
    ({"class_sets": [[0, 0], [1, 1]]}, "class_sets"),
    ({"class_sets": [1, 1]}, "class_sets")])
def test_vote_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpecialistsVote(**kwargs)


def test_embed_classes():
    out = np.asarray(EmbedClasses([3, 1], 4)(np.array([[2.0, -1.0]],
                                                      "float32")))
    np.testing.assert_array_equal(out, [[-1e9, -1.0, -1e9, 2.0]])
    with pytest.raises(ValueError, match="classes"):
        EmbedClasses([1, 1], 4)
    with pytest.raises(ValueError, match="classes"):
        EmbedClasses([4], 4)


def test_layer_configs_round_trip():
    for layer in (EmbedClasses([2, 0], 3),
                  SpecialistsVote(SETS.tolist(), "doubt")):
        clone = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer))
        assert type(clone) is type(layer)
        assert clone.get_config() == layer.get_config()


# -- system ----------------------------------------------------------------
def _tiny_system(shape=(6, 6, 1), k=4):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    gen = keras.Model(inputs, keras.layers.Dense(k)(
        keras.layers.Flatten()(inputs)))
    sets = _sets({0, 1}, {1, 2, 3}, k=k)
    specs = [specialist_cnn(np.flatnonzero(s), num_classes=k,
                            input_shape=shape, width=2, dense=4,
                            name=f"s{i}") for i, s in enumerate(sets)]
    return specialists_system(gen, specs, sets), gen, specs, sets


def test_system_matches_numpy_vote():
    system, gen, specs, sets = _tiny_system()
    x = np.random.default_rng(0).uniform(size=(30, 6, 6, 1)).astype(
        "float32")
    members = np.asarray(system.components["members"].predict(x, verbose=0))
    assert members.shape == (30, 3, 4)
    all_sets = np.concatenate([np.ones((1, 4), bool), sets])
    np.testing.assert_array_equal(system.arrays["class_sets"], all_sets)
    np.testing.assert_allclose(members[:, 0], gen.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert np.all(members[:, 1, 2:] == -1e9) and members[:, 2, 0].max() \
        == -1e9
    # Numpy reference of Algorithm 1.
    z = np.where(all_sets[None], members, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    pred = p.argmax(-1)
    want = np.empty((30, 4))
    for n in range(30):
        voters = np.ones(3, bool)
        for c in range(4):
            if np.all(pred[n, all_sets[:, c]] == c):
                voters = all_sets[:, c]
                break
        want[n] = p[n, voters].mean(0)
    np.testing.assert_allclose(np.exp(system.logits(x)), want, atol=1e-5)
    np.testing.assert_allclose(system.scores(x)[:, 0], 1 - want.max(-1),
                               atol=1e-5)
    assert system.names == ["specialists_confidence"]
    assert system.components["base"] is gen
    assert (system.differentiable, system.randomized) == (True, False)


def test_system_bad_sets():
    system, gen, specs, sets = _tiny_system()
    with pytest.raises(ValueError, match="class_sets"):
        specialists_system(gen, specs, sets[:1])


def test_save_load_round_trip(tmp_path):
    system, *_ = _tiny_system()
    x = np.random.default_rng(1).uniform(size=(40, 6, 6, 1)).astype(
        "float32")
    system.calibrate(x, fpr=0.1)
    system.save(tmp_path / "sp")
    loaded = load_system(tmp_path / "sp")
    assert loaded.kind == "specialists" and loaded.names == system.names
    np.testing.assert_array_equal(loaded.arrays["class_sets"],
                                  system.arrays["class_sets"])
    np.testing.assert_array_equal(loaded.thresholds, system.thresholds)
    np.testing.assert_array_equal(loaded.scores(x), system.scores(x))
    np.testing.assert_array_equal(loaded.logits(x), system.logits(x))
    np.testing.assert_array_equal(
        loaded.components["members"].predict(x, verbose=0),
        system.components["members"].predict(x, verbose=0))
    assert loaded.config["class_sets"] == [[0, 1], [1, 2, 3]]


# -- training --------------------------------------------------------------
def _generalist(x, y):
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(10)])
    net.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
    net.fit(x, y, epochs=3, batch_size=100, verbose=0)
    return net


def test_confusion_on_real_images(fmnist_test):
    x, y = fmnist_test
    net = _generalist(x[:500], y[:500])
    clean = generalist_confusion(net, x[500:800], y[500:800],
                                 source="clean")
    adv = generalist_confusion(net, x[500:800], y[500:800], eps=0.1)
    assert clean.shape == adv.shape == (10, 10)
    assert clean.sum() == adv.sum() == 300
    np.testing.assert_array_equal(clean.sum(1), np.bincount(y[500:800],
                                                            minlength=10))
    # FGSM moves predictions off the diagonal.
    assert np.trace(adv) < np.trace(clean)
    sets = class_sets_from_confusion(adv)
    assert 0 < len(sets) <= 20 and sets.shape[1] == 10
    with pytest.raises(ValueError, match="confusion_source"):
        generalist_confusion(net, x[:10], y[:10], source="pgd")


def test_quick_fit_given_sets(fmnist_test):
    x, y = fmnist_test
    net = _generalist(x[:500], y[:500])
    sets = np.zeros((2, 10), bool)
    sets[0, [1, 5, 8]] = True
    sets[1, [0, 3, 7, 9]] = True
    system = fit_specialists(net, x[:600], y[:600], x_val=x[600:800],
                             y_val=y[600:800], class_sets=sets,
                             max_per_class=50, epochs=3, batch_size=16,
                             learning_rate=3e-3, width=4, dense=16,
                             verbose=0)
    assert system.kind == "specialists"
    assert system.components["members"].output_shape == (None, 3, 10)
    assert system.config["class_sets"] == [[1, 5, 8], [0, 3, 7, 9]]
    accs = system.config["specialist_val_accuracy"]
    # Well above chance over its own classes (1/3 and 1/4).
    assert accs[0] > 0.6 and accs[1] > 0.5, accs
    rate = system.calibrate(x[800:], fpr=0.05)
    assert abs(rate - 0.05) < 0.02
    with pytest.raises(ValueError, match="class_sets"):
        fit_specialists(net, x[:50], y[:50], class_sets=sets[:, :5],
                        verbose=0)


@pytest.mark.slow
def test_full_fit_pipeline(fmnist_test):
    x, y = fmnist_test
    net = _generalist(x[:500], y[:500])
    system = fit_specialists(net, x[:800], y[:800], confusion_images=400,
                             max_per_class=20, epochs=1, width=4, dense=8,
                             verbose=0)
    sets = system.arrays["class_sets"]
    assert sets[0].all() and len(sets) == system.config["members"]
    assert len(system.config["confusion"]) == 10
    assert system.components["members"].output_shape[1] == len(sets)


def test_vote_gradients_flow_to_the_input():
    from keras import ops

    from core import backends

    system, *_ = _tiny_system()
    x = ops.convert_to_tensor(np.random.default_rng(2).uniform(
        size=(4, 6, 6, 1)).astype("float32"))
    for model in (system.detector, system.classifier):
        _, _, grad = backends.value_and_grad(
            lambda v, m=model: (ops.sum(m(v)), None), x)
        grad = ops.convert_to_numpy(grad)
        assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
