"""Tests of adaptive-attack enforcement (`attacks.adaptive`): BPDA for
non-differentiable layers, EOT and expected predictions for randomized ones
(Athalye, Carlini, Wagner 2018, arXiv 1802.00420, Sec. 4.1 and 4.3), and
the refusal of non-adaptive robust numbers unless marked naive."""

import json

import keras
import numpy as np
import pytest
from keras import ops

import models
from attacks.adaptive import (AdaptiveModel, MaskedGradient, adaptive_model,
                              require_adaptive, threat_model)
from attacks.eot import EOTModel
from attacks.pgd import pgd
from core import backends
from layers import (BitDepthReduction, RandomResizePad,
                    StochasticActivationPruning, ThermometerEncoding)

THERM = [{"class_name": "ThermometerEncoding", "config": {"levels": 16}}]


def _cnn(input_defenses=None, width=4):
    return models.create_model("madry_cnn", num_classes=10, width=width,
                               input_defenses=input_defenses)


def _sap_net(active=True):
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = StochasticActivationPruning(active=active, name="sap")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def _input_grad(fn, x):
    """d sum log_softmax(fn(x))[:, 0] / dx as numpy; None where the
    backend reports no gradient at all (TensorFlow: None on the tape)."""
    def objective(v):
        return ops.sum(ops.log_softmax(fn(v))[:, 0]), None

    try:
        _, _, grad = backends.value_and_grad(objective, x)
    except ValueError as e:
        if "no gradient" not in str(e):
            raise
        return None
    return ops.convert_to_numpy(grad)


def _uniform(shape, seed):
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


def _assert_no_gradient(grad):
    """TensorFlow has no gradient (None); JAX differentiates the rounding
    to an exact zero."""
    if backends.BACKEND == "tensorflow":
        assert grad is None
    else:
        np.testing.assert_array_equal(grad, 0.0)


def _acc(predict, x, y):
    return float(np.mean(np.argmax(predict(x), -1) == y))


@pytest.fixture(scope="module")
def therm_net():
    """A thermometer-encoded CNN (width 8) trained naturally for one epoch
    on 3000 real Fashion-MNIST training images."""
    from data.fashion_mnist import load_fashion_mnist

    keras.utils.set_random_seed(3)
    x, y = load_fashion_mnist("train")
    net = _cnn(THERM, width=8)
    net.compile(optimizer=keras.optimizers.Adam(2e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
    net.fit(x[:3000, ..., None].astype("float32") / 255.0,
            y[:3000].astype("int32"), batch_size=50, epochs=1, verbose=0)
    return net


# ------------------------------------------------------------ threat_model
def test_threat_model_walks_nested_models():
    inner = keras.Sequential([keras.Input((8, 8, 1)),
                              ThermometerEncoding(4, name="therm"),
                              keras.layers.Conv2D(2, 3, name="conv")],
                             name="inner")
    inputs = keras.Input((8, 8, 1))
    h = BitDepthReduction(bits=3, name="bits")(inputs)
    h = RandomResizePad(max_size=10, active=False, name="rrp_off")(h)
    h = RandomResizePad(max_size=8, min_size=6, name="rrp")(
        keras.layers.Cropping2D(1)(h))
    h = inner(h)
    h = StochasticActivationPruning(name="sap")(h)
    net = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    assert threat_model(net) == {"randomized": ["rrp", "sap"],
                                 "non_differentiable": ["bits", "therm"]}
    assert threat_model(_cnn()) == {"randomized": [],
                                    "non_differentiable": []}
    with pytest.raises(ValueError, match="keras.Model"):
        threat_model(lambda x: x)


# --------------------------------------------------------------- adaptive
def test_plain_model_is_attacked_and_scored_as_is():
    net = _cnn()
    adaptive = adaptive_model(net)
    x = _uniform((2, 28, 28, 1), 1)
    assert adaptive.attack_model is net
    np.testing.assert_array_equal(adaptive.predict(x), net(x))
    assert adaptive.description == {
        "bpda": False, "eot_samples": None, "naive": False,
        "randomized_layers": [], "non_differentiable_layers": [],
        "predict": "deterministic", "batched": None, "notes": []}
    assert require_adaptive(net, adaptive.description)["randomized"] == []


def test_thermometer_gets_bpda(therm_net):
    x = _uniform((4, 28, 28, 1), 2)
    adaptive = adaptive_model(therm_net)
    assert adaptive.description["bpda"] is True
    assert adaptive.description["eot_samples"] is None
    # Keras numbers auto-named layers per process ("_1", ...)
    names = adaptive.description["non_differentiable_layers"]
    assert len(names) == 1 and names[0].startswith("thermometer_encoding")
    # Same forward pass bit for bit; gradient exists where the model's
    # does not (Athalye et al. 2018, Sec. 4.1).
    np.testing.assert_array_equal(adaptive.attack_model(x), therm_net(x))
    np.testing.assert_array_equal(adaptive.predict(x), therm_net(x))
    _assert_no_gradient(_input_grad(therm_net, x))
    grad = _input_grad(adaptive.attack_model, x)
    assert np.all(np.isfinite(grad)) and np.mean(grad != 0) > 0.5
    json.dumps(adaptive.description)


def test_naive_thermometer_runs_pgd_and_stays_near_clean(therm_net,
                                                         fmnist_test):
    x, y = fmnist_test[0][:200], fmnist_test[1][:200]
    naive = adaptive_model(therm_net, naive=True)
    adaptive = adaptive_model(therm_net)
    assert naive.description["naive"] is True
    assert isinstance(naive.attack_model, MaskedGradient)
    grad = _input_grad(naive.attack_model, x[:4])
    np.testing.assert_array_equal(grad, 0.0)  # masked, not an error
    kwargs = dict(eps=0.1, step_size=0.01, steps=10, seed=0)
    clean = _acc(therm_net, x, y)
    naive_acc = _acc(naive.predict, pgd(naive.attack_model, x, y, **kwargs),
                     y)
    bpda_acc = _acc(adaptive.predict,
                    pgd(adaptive.attack_model, x, y, **kwargs), y)
    assert clean > 0.6
    assert naive_acc >= clean - 0.15  # only the random start moved x
    assert bpda_acc <= naive_acc - 0.2  # the gradient was only masked
    if backends.BACKEND == "tensorflow":  # JAX: a zero gradient, no error
        with pytest.raises(ValueError, match="no gradient"):
            pgd(therm_net, x[:4], y[:4], **kwargs)


def test_masked_gradient_is_the_true_gradient_when_it_exists():
    net = _cnn()
    x = _uniform((2, 28, 28, 1), 3)
    np.testing.assert_allclose(_input_grad(MaskedGradient(net), x),
                               _input_grad(net, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(MaskedGradient(net)(x), net(x))


@pytest.mark.parametrize("kind", ["rrp", "sap"])
def test_randomized_model_gets_eot_and_expected_prediction(kind):
    if kind == "rrp":
        net = _cnn([RandomResizePad(max_size=32, seed=0)])
    else:
        net = _sap_net()
    x = _uniform((4, 28, 28, 1), 4)
    adaptive = adaptive_model(net, eot_samples=200)
    d = adaptive.description
    assert (d["eot_samples"], d["predict"], d["bpda"]) == (200, "expectation",
                                                           False)
    assert d["batched"] is False  # per-call draws: true EOT for both
    assert isinstance(adaptive.attack_model, EOTModel)
    assert isinstance(adaptive.predict, EOTModel)
    assert adaptive.predict.wrapped is net
    single = [ops.convert_to_numpy(net(x)) for _ in range(2)]
    expect = [ops.convert_to_numpy(adaptive.predict(x)) for _ in range(2)]
    single_gap = np.abs(single[0] - single[1]).mean()
    expect_gap = np.abs(expect[0] - expect[1]).mean()
    assert single_gap > 0
    # Monte-Carlo mean of 200 draws: spread ~ 1/sqrt(200) of one draw's.
    assert expect_gap < 0.3 * single_gap
    # The EOT gradient (mean of per-draw gradients): finite and non-zero.
    grad = _input_grad(adaptive_model(net, eot_samples=5).attack_model,
                       x)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_randomized_and_non_differentiable_gets_eot_over_bpda():
    net = _cnn(THERM + [RandomResizePad(max_size=32, seed=0)])
    x = _uniform((2, 28, 28, 1), 5)
    adaptive = adaptive_model(net, eot_samples=3)
    d = adaptive.description
    assert d["bpda"] is True and d["eot_samples"] == 3
    assert d["batched"] is False
    assert any("eot_samples=3 < 20" in note for note in d["notes"])
    assert isinstance(adaptive.attack_model, EOTModel)
    assert adaptive.attack_model.wrapped is not net  # the BPDA clone
    assert adaptive.predict.wrapped is net
    grad = _input_grad(adaptive.attack_model, x)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    assert isinstance(adaptive, AdaptiveModel)
    require_adaptive(net, adaptive)


def test_naive_randomized_model_is_attacked_on_single_draws():
    net = _sap_net()
    naive = adaptive_model(net, naive=True)
    assert naive.attack_model is net
    assert naive.description["predict"] == "single_draw"
    assert naive.description["eot_samples"] is None


# --------------------------------------------------------- require_adaptive
def test_require_adaptive_refuses_unless_adaptive_or_naive(therm_net):
    masked = {"bpda": False, "eot_samples": None, "naive": False}
    with pytest.raises(ValueError, match=r"BPDA.*thermometer_encoding"):
        require_adaptive(therm_net, masked)
    with pytest.raises(ValueError, match="BPDA"):
        require_adaptive(therm_net, {})
    require_adaptive(therm_net, {**masked, "naive": True})
    require_adaptive(therm_net, adaptive_model(therm_net, naive=True))
    sap = _sap_net()
    for samples in (None, 1):
        with pytest.raises(ValueError, match=r"EOT.*\['sap'\]"):
            require_adaptive(sap, {"eot_samples": samples})
    require_adaptive(sap, {"eot_samples": 2})
    require_adaptive(_sap_net(active=False), {})  # switched off: no EOT


@pytest.mark.parametrize("description, match", [
    ({"naive": "yes"}, "'naive' must be one of"),
    ({"bpda": 1}, "'bpda' must be one of"),
    ({"eot_samples": 2.5}, "'eot_samples' must be an int"),
    ([("naive", True)], "must be a dict"),
])
def test_require_adaptive_rejects_malformed_descriptions(description, match):
    with pytest.raises(ValueError, match=match):
        require_adaptive(_cnn(), description)


@pytest.mark.parametrize("kwargs, match", [
    ({"eot_samples": 0}, "eot_samples must be an int >= 1"),
    ({"eot_samples": 2.0}, "eot_samples must be an int >= 1"),
    ({"eot_samples": True}, "eot_samples must be an int >= 1"),
    ({"naive": 1}, r"naive must be one of \(True, False\)"),
    ({"batched": "auto"}, "batched must be one of"),
])
def test_adaptive_model_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adaptive_model(_cnn(), **kwargs)


def test_batched_eot_only_for_per_example_draws():
    net = _cnn([RandomResizePad(max_size=32)])
    with pytest.raises(ValueError, match="draw once per batch"):
        adaptive_model(net, batched=True)
    adaptive = adaptive_model(_sap_net(), batched=True)  # SAP: per example
    assert adaptive.attack_model.batched and adaptive.description["batched"]


@pytest.mark.slow
def test_demo_script_smoke(tmp_path):
    """scripts/adaptive_demo.py end to end on 2000 images (~1 min)."""
    demo = _demo_module()
    report = demo.main(["--smoke", f"--output={tmp_path / 'out'}",
                        f"--weights_dir={tmp_path / 'w'}"])
    assert [r["defense"] for r in report["rows"]] == ["thermometer", "sap",
                                                      "rrp"]
    for row in report["rows"]:
        assert row["naive"]["description"]["naive"] is True
        assert row["naive"]["flag"].startswith("naive:")
        assert row["adaptive"]["max_linf"] <= 0.1 + 1e-6
    assert report["rows"][0]["adaptive"]["description"]["bpda"] is True
    assert report["rows"][2]["adaptive"]["description"]["eot_samples"] == 20
    for name in ("report.json", "report.md", "run_info.json"):
        assert (tmp_path / "out" / name).exists()
    assert "naive: gradient-masked" in (tmp_path / "out" / "report.md"
                                        ).read_text()


def _demo_module():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "scripts" / (
        "adaptive_demo.py")
    spec = importlib.util.spec_from_file_location("adaptive_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_demo_upsample_scales_images_and_every_size():
    """--upsample=2: 56x56 inputs, RRP drawing from [56, 64) into 64x64,
    and the fixed placement of the undefended copy at the centre."""
    demo = _demo_module()
    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 10:18, 10:18] = 255
    x = demo.upsample(images, 2)
    assert x.shape == (3, 56, 56, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_allclose(x[:, 24:32, 24:32], 1.0)  # inside the square
    np.testing.assert_array_equal(demo.upsample(images, 1)[..., 0],
                                  images / 255.0)
    for name in ("plain", "thermometer", "sap", "rrp"):
        net = demo.build(name, 4, upsample=2)
        assert net.input_shape == (None, 56, 56, 1), name
    rrp = [la for la in demo.build("rrp", 4, upsample=2).layers
           if isinstance(la, RandomResizePad)][0]
    assert (rrp.max_size, len(rrp.patterns())) == (64, sum(
        (65 - s) ** 2 for s in range(56, 64)))
    with pytest.raises(ValueError, match="--upsample must be an integer"):
        demo.parse_args(["--upsample=0"])
    with pytest.raises(SystemExit):  # argparse names the accepted attacks
        demo.parse_args(["--attack=fgsm"])
