"""Tests for models/: parameter counts, shapes, normalization, registry."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

import models  # noqa: E402
from core import backends  # noqa: E402
from models.cifar_resnet import SubsampleChannelPad  # noqa: E402
from models.resnet import RESNET_SPECS, resnet18  # noqa: E402

# Trainable parameters, (num_classes, count). ImageNet ones are torchvision's
# published numbers. CIFAR ResNets use the option-A (parameter-free) shortcut
# of He et al. 2016, Sec. 4.2: a 1x1-conv projection would add 2,752.
PARAM_COUNTS = {
    "resnet18": (1000, 11_689_512),
    "resnet34": (1000, 21_797_672),
    "resnet50": (1000, 25_557_032),
    "resnet101": (1000, 44_549_160),
    "resnet152": (1000, 60_192_808),
    "resnext50_32x4d": (1000, 25_028_904),
    "resnext101_32x4d": (1000, 44_177_704),
    "resnext101_32x8d": (1000, 88_791_336),
    "resnet20": (10, 269_722),
    "resnet56": (10, 853_018),
    "wrn28_10": (10, 36_479_194),
    "wrn34_10": (10, 46_160_474),
    "madry_cnn": (10, 3_274_634),
}

# Width-8, one-block-per-stage variants of each family: (name, input, kwargs).
TINY = [
    ("resnet18", (32, 32, 3), {}),
    ("resnet50", (32, 32, 3), {}),
    ("resnext50_32x4d", (32, 32, 3), {"groups": 4, "width_per_group": 16}),
    ("resnet20", (32, 32, 3), {}),
    ("resnet56", (28, 28, 1), {"mean": 0.2860, "std": 0.3530}),
    ("wrn28_10", (32, 32, 3), {"widen_factor": 2}),
    ("wrn34_10", (28, 28, 1), {"widen_factor": 1, "mean": 0.5, "std": 0.5}),
    ("madry_cnn", (28, 28, 1), {}),
]


def _trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _tiny(name, input_shape, num_classes=10, **kwargs):
    """Width 8 and, except for madry_cnn, one block per stage."""
    if name != "madry_cnn":
        kwargs["blocks"] = (1,) * (4 if name in RESNET_SPECS else 3)
    return models.create_model(
        name,
        num_classes=num_classes,
        input_shape=input_shape,
        width=8,
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def test_every_registered_model_has_a_count():
    assert models.list_models() == sorted(PARAM_COUNTS)
    assert models.list_models("resnext*") == [
        "resnext101_32x4d",
        "resnext101_32x8d",
        "resnext50_32x4d",
    ]


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_param_count(name):
    num_classes, expected = PARAM_COUNTS[name]
    model = models.create_model(name, num_classes=num_classes)
    assert _trainable_count(model) == expected


@pytest.mark.parametrize("name,input_shape,kwargs", TINY)
def test_tiny_forward_and_input_gradient(name, input_shape, kwargs):
    model = _tiny(name, input_shape, num_classes=7, **kwargs)
    x = keras.random.uniform((2, *input_shape), seed=1)

    def objective(v):
        logits = model(v, training=False)
        return ops.sum(logits[:, 0]), logits

    _, logits, grad = backends.value_and_grad(objective, x)
    assert logits.shape == (2, 7)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(ops.convert_to_numpy(logits)))
    assert grad.shape == x.shape
    assert np.any(ops.convert_to_numpy(grad) != 0)
    assert model.layers[-1].name == "logits"


def test_normalize_layer_computes_x_minus_mean_over_std():
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    model = _tiny("resnet20", (8, 8, 3), mean=mean, std=std)
    assert model.layers[1].name == "normalize"
    assert model.layers[2].input is model.get_layer("normalize").output
    normalize = keras.Model(model.input, model.get_layer("normalize").output)
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    expected = (x - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(normalize(x), expected, rtol=1e-5, atol=1e-6)


def test_model_equals_unnormalized_model_on_manually_normalized_input():
    # The ImageNet statistics are resnet18's defaults.
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = resnet18(num_classes=5, input_shape=(32, 32, 3), width=8)
    plain = resnet18(
        num_classes=5, input_shape=(32, 32, 3), width=8, mean=None, std=None
    )
    plain.set_weights(model.get_weights())
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("f4")
    x_normalized = ((x - np.array(mean)) / np.array(std)).astype("f4")
    np.testing.assert_allclose(
        model(x, training=False),
        plain(x_normalized, training=False),
        rtol=1e-4,
        atol=1e-5,
    )


def test_scalar_stats_broadcast_and_mean_none_skips_normalization():
    x = np.full((1, 8, 8, 3), 0.75, "float32")
    for std in (0.25, (0.25, 0.25, 0.25)):
        model = _tiny("resnet20", (8, 8, 3), mean=0.5, std=std)
        layer = model.get_layer("normalize")
        normalize = keras.Model(model.input, layer.output)
        np.testing.assert_allclose(normalize(x), np.ones_like(x), rtol=1e-6)
    plain = resnet18(
        num_classes=3, input_shape=(32, 32, 3), mean=None, std=None
    )
    assert "normalize" not in [layer.name for layer in plain.layers]
    assert plain.layers[1].name == "stem_conv"
    cnn = models.create_model("madry_cnn", num_classes=10)
    assert "normalize" not in [layer.name for layer in cnn.layers]


def test_resnet50_stage_names_and_shortcuts():
    model = models.create_model("resnet50", num_classes=1000)
    names = {layer.name for layer in model.layers}
    for stage, num_blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for block in range(1, num_blocks + 1):
            prefix = f"stage{stage}_block{block}"
            for part in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "out"):
                assert f"{prefix}_{part}" in names
            assert (f"{prefix}_shortcut_conv" in names) == (block == 1)
        assert f"stage{stage}_block{num_blocks + 1}_out" not in names
    assert model.get_layer("stage2_block1_out").output.shape == (
        None,
        56,
        56,
        256,
    )
    assert model.get_layer("stage5_block3_out").output.shape == (
        None,
        7,
        7,
        2048,
    )
    # v1.5: the stride sits on the 3x3 conv of the first block of a stage.
    assert model.get_layer("stage3_block1_conv1").strides == (1, 1)
    assert model.get_layer("stage3_block1_conv2").strides == (2, 2)


@pytest.mark.parametrize(
    "name,last_bn",
    [("resnet50", "bn3"), ("resnet18", "bn2"), ("resnet20", "bn2")],
)
def test_last_bn_gamma_of_each_block_is_zero(name, last_bn):
    model = models.create_model(
        name, num_classes=10, input_shape=(32, 32, 3), width=8
    )
    bns = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(bns) > 10
    for layer in bns:
        gamma = keras.ops.convert_to_numpy(layer.gamma)
        is_last = layer.name.startswith("stage") and layer.name.endswith(
            last_bn
        )
        np.testing.assert_array_equal(gamma, 0.0 if is_last else 1.0)
        assert layer.epsilon == 1e-5 and layer.momentum == 0.9


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(SubsampleChannelPad(2, 6)(x))
    assert y.shape == (2, 3, 3, 6)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 3:], 0.0)


def test_create_model_drops_none_kwargs():
    model = models.create_model(
        "resnet20",
        num_classes=10,
        input_shape=None,
        width=None,
        blocks=(1, 1, 1),
        mean=None,
        std=None,
    )
    assert model.input.shape == (None, 32, 32, 3)
    assert model.get_layer("stem_conv").filters == 16
    assert model.get_layer("normalize") is not None


def test_unknown_model_name_lists_models():
    with pytest.raises(KeyError, match="resnet50.*wrn34_10"):
        models.create_model("resnet15", num_classes=10)


def test_bad_kwarg_names_key_and_accepted_ones():
    with pytest.raises(TypeError, match=r"\['widht'\].*'width'"):
        models.create_model("resnet20", num_classes=10, widht=8)
    with pytest.raises(TypeError, match="widen_factor"):
        models.create_model("resnet18", num_classes=10, widen_factor=2)
    with pytest.raises(ValueError, match="basic-block ResNets need groups=1"):
        models.create_model("resnet18", num_classes=10, groups=32)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"input_shape": (28, 28, 1)}, "mean has 3 values.*1 channel"),
        ({"mean": (0.5, 0.5), "std": 0.5}, "mean has 2 values.*3 channel"),
        ({"std": (1.0, 0.0, 1.0)}, "std must be positive"),
        ({"blocks": (1, 1)}, r"blocks must be 3 positive ints"),
        ({"width": 0}, "width must be a positive int"),
        ({"input_shape": (32, 32)}, "input_shape must be"),
    ],
)
def test_invalid_values_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.create_model("resnet20", num_classes=10, **kwargs)


def test_mean_without_std_raises():
    with pytest.raises(ValueError, match="mean and std must both"):
        models.create_model("madry_cnn", num_classes=10, mean=0.5)


def test_resnext_bottleneck_width_below_one_raises():
    with pytest.raises(ValueError, match="width_per_group"):
        models.create_model("resnext50_32x4d", num_classes=10, width=8)


def test_keras_save_load_round_trip(tmp_path):
    model = _tiny("resnet20", (16, 16, 3))
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("f4")
    path = tmp_path / "resnet20.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
