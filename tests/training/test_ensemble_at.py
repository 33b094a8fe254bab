"""Ensemble adversarial training (ensemble_at.py): the source of each step's
FGSM examples, checked against the analytic gradient of linear softmax
models; the loss against Kurakin et al.'s mix computed by hand; frozen
static models; and `ensemble_at_cnn_fmnist:smoke` trained through train.py
with two static models saved here first (test_train_smoke.py leaves this
recipe to this file)."""

import json

import keras
import numpy as np
import pytest

from training import ensemble_at as ens
import models
from tests.train_utils import run_train

EPS = 0.1
CLASSES = 3


def _linear(seed, classes=CLASSES, shape=(2, 2, 3)):
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                              keras.layers.Dense(classes)])
    model.set_weights([rng.normal(size=(int(np.prod(shape)), classes)),
                       rng.normal(size=classes)])
    return model


def _np_fgsm(model, x, y, labels):
    """clip(x + eps sign(grad_x CE)) from the analytic gradient of a linear
    softmax model (labels: "true" or the model's "predicted" ones)."""
    w, b = (v.astype("float64") for v in model.get_weights())
    z = x.reshape(len(x), -1) @ w + b
    if labels == "predicted":
        y = z.argmax(1)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = ((p - np.eye(w.shape[1])[y]) @ w.T).reshape(x.shape)
    return np.clip(x + EPS * np.sign(grad), 0.0, 1.0)


def _np_ce(model, x, y):
    w, b = (v.astype("float64") for v in model.get_weights())
    z = x.reshape(len(x), w.shape[0]) @ w + b
    z = z - z.max(1, keepdims=True)
    return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))


def _data(n=6, seed=9):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, size=(n, 2, 2, 3)).astype("float32")
    return x, (np.arange(n) % CLASSES).astype("int32")


def _trainer(lr=0.0, **kwargs):
    net, statics = _linear(0), [_linear(1), _linear(2)]
    model = ens.EnsembleAdversarialTrainer(
        net, statics, {"name": "fgsm", "eps": EPS}, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    model.build((None, 2, 2, 3))
    return model


@pytest.mark.parametrize("labels", ["true", "predicted"])
def test_round_robin_uses_each_source_in_turn(labels):
    model = _trainer(selection="round_robin", labels=labels)
    x, y = _data()
    for step in range(6):
        model.optimizer.iterations.assign(step)
        source = model.sources[step % 3]
        x_mix, y_mix, _ = model.mixed_batch((x, y))
        np.testing.assert_array_equal(x_mix[:3], x[:3])
        np.testing.assert_array_equal(y_mix, y)
        np.testing.assert_allclose(
            x_mix[3:], _np_fgsm(source, x[3:], y[3:], labels), atol=1e-6)
        # ... and differs from what the other two sources would give
        for other in model.sources:
            if other is not source:
                assert not np.allclose(
                    x_mix[3:], _np_fgsm(other, x[3:], y[3:], labels))


def test_fit_takes_each_source_in_turn():
    """Through fit() (the compiled step) with lr = 0: the epoch loss is the
    mean of the 3 steps' Kurakin mixes, step s crafting on source s % 3
    (under JAX the optimizer step comes from the trainer state)."""
    model = _trainer(selection="round_robin")
    x, y = _data(18)

    def epoch_loss(sources):
        losses = []
        for step, source in enumerate(sources):
            xb, yb = x[6 * step:6 * step + 6], y[6 * step:6 * step + 6]
            x_adv = _np_fgsm(source, xb[3:], yb[3:], "true")
            losses.append((_np_ce(model.net, xb[:3], yb[:3]).sum()
                           + _np_ce(model.net, x_adv, yb[3:]).sum()) / 6)
        return np.mean(losses)

    history = model.fit(x, y, batch_size=6, epochs=1, shuffle=False,
                        verbose=0)
    got = history.history["loss"][0]
    np.testing.assert_allclose(got, epoch_loss(model.sources), rtol=1e-5)
    assert not np.isclose(got, epoch_loss([model.net] * 3), rtol=1e-3)
    assert int(model.optimizer.iterations.numpy()) == 3


def test_random_selection_is_uniform_and_seeded():
    def draws(seed):
        model = _trainer(seed=seed)
        out = []
        for step in range(300):
            model.optimizer.iterations.assign(step)
            out.append(int(model.source_index()))
        return np.array(out)

    first = draws(0)
    counts = np.bincount(first, minlength=3)
    assert counts.min() > 70, counts  # ~100 each
    np.testing.assert_array_equal(first, draws(0))
    assert not np.array_equal(first, draws(1))


@pytest.mark.parametrize("adv_fraction, adv_weight", [(0.5, 1.0),
                                                      (0.5, 0.3), (1.0, 1.0)])
def test_loss_is_kurakins_mix(adv_fraction, adv_weight):
    """Reported loss = (sum_clean CE + lambda sum_adv CE) / (m - k +
    lambda k) at the first step (source: the trained network)."""
    model = _trainer(selection="round_robin", adv_fraction=adv_fraction,
                     adv_weight=adv_weight)
    x, y = _data()
    m = len(x)
    k = round(adv_fraction * m)
    x_adv = _np_fgsm(model.net, x[m - k:], y[m - k:], "true")
    want = ((_np_ce(model.net, x[:m - k], y[:m - k]).sum()
             + adv_weight * _np_ce(model.net, x_adv, y[m - k:]).sum())
            / (m - k + adv_weight * k))
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want, rtol=1e-5)


def test_static_models_stay_frozen():
    model = _trainer(lr=0.5, selection="round_robin")
    statics = [m.get_weights() for m in model.static_models]
    net_before = model.net.get_weights()
    x, y = _data(12)
    model.fit(x, y, batch_size=6, epochs=3, verbose=0)
    assert all(not m.trainable for m in model.static_models)
    assert {id(v) for v in model.trainable_variables} == {
        id(v) for v in model.net.trainable_variables}
    for m, before in zip(model.static_models, statics):
        for a, b in zip(before, m.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not np.allclose(net_before[0], model.net.get_weights()[0])


def test_serialization_keeps_the_static_models(tmp_path):
    model = _trainer(selection="round_robin", adv_weight=0.3,
                     labels="predicted")
    model.save(tmp_path / "trainer.keras")
    loaded = keras.saving.load_model(tmp_path / "trainer.keras")
    assert isinstance(loaded, ens.EnsembleAdversarialTrainer)
    assert (loaded.selection, loaded.adv_weight, loaded.labels) == (
        "round_robin", 0.3, "predicted")
    assert len(loaded.static_models) == 2
    for a, b in zip(model.static_models, loaded.static_models):
        assert not b.trainable
        for u, v in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("kwargs, match", [
    ({"adv_fraction": 0.0}, "adv_fraction"),
    ({"adv_weight": 0.0}, "adv_weight"),
    ({"selection": "cyclic"}, r"selection must be one of \('random'"),
    ({"labels": "ll"}, r"labels must be one of \('true', 'predicted'\)"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _trainer(**kwargs)


def test_static_models_must_fit_the_network():
    attack = {"name": "fgsm", "eps": EPS}
    with pytest.raises(ValueError, match="at least one"):
        ens.EnsembleAdversarialTrainer(_linear(0), [], attack)
    with pytest.raises(ValueError, match=r"static model 0 .* 4 logits"):
        ens.EnsembleAdversarialTrainer(_linear(0), [_linear(1, classes=4)],
                                       attack)
    with pytest.raises(ValueError, match=r"inputs \(2, 2, 1\)"):
        ens.EnsembleAdversarialTrainer(
            _linear(0), [_linear(1, shape=(2, 2, 1))], attack)


def test_load_static_models_errors(tmp_path):
    with pytest.raises(ValueError, match=r"--recipe.train.static_models="):
        ens.load_static_models(())
    missing = str(tmp_path / "nope.keras")
    with pytest.raises(ValueError, match="nope.keras' does not exist"):
        ens.load_static_models((missing,))
    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="junk.keras' is not a loadable"):
        ens.load_static_models((str(junk),))


# -- the recipe through train.py ---------------------------------------------

def _static_files(tmp_path):
    """Two untrained static models of different architectures, saved."""
    paths = []
    for i, (name, kwargs) in enumerate([
            ("madry_cnn", {"width": 4}),
            ("resnet20", {"width": 4, "blocks": (1, 1, 1)})]):
        keras.utils.set_random_seed(10 + i)
        net = models.create_model(name, num_classes=10, mean=0.286,
                                  std=0.353, input_shape=(28, 28, 1),
                                  **kwargs)
        paths.append(str(tmp_path / f"static{i}.keras"))
        net.save(paths[-1])
    return paths


@pytest.mark.parametrize("strategy", ["one_device", "mirrored"])
def test_smoke_recipe_trains_through_train_py(tmp_path, strategy):
    paths = _static_files(tmp_path)
    run = tmp_path / "run"
    run_train(run, "ensemble_at_cnn_fmnist:smoke",
              f"--recipe.train.static_models={tuple(paths)!r}",
              strategy=strategy)
    summary = json.loads((run / "train_summary.json").read_text())
    assert np.isfinite(summary["final_logs"]["loss"])
    net = keras.saving.load_model(run / "model.keras")
    smoke_cnn = models.create_model("madry_cnn", num_classes=10, width=8)
    assert net.count_params() == smoke_cnn.count_params()  # net only
    checkpoint = keras.saving.load_model(run / "checkpoints" / "last.keras")
    assert len(checkpoint.static_models) == 2
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["static_models"] == paths


def test_recipe_without_static_models_says_how_to_pass_them(tmp_path):
    with pytest.raises(ValueError, match="--recipe.train.static_models"):
        run_train(tmp_path / "a", "ensemble_at_cnn_fmnist:smoke")
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="missing.keras"):
        run_train(tmp_path / "b", "ensemble_at_cnn_fmnist:smoke",
                  f"--recipe.train.static_models=('{missing}',)")
