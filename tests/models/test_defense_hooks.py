"""Defense hook points of the ResNet builders: exact parameter counts of
Xie et al.'s denoise models, names, identity at init, input defenses, SAP."""

import keras
import numpy as np
import pytest

import models


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_r152_denoise_has_the_published_parameter_count():
    model = models.create_model(
        "resnet152", num_classes=1000,
        denoise={"kind": "gaussian", "embed": True, "where": "after_stage"})
    assert _trainable(model) == 71_341_608
    names = {layer.name for layer in model.layers}
    assert {f"stage{k}_denoise" for k in (2, 3, 4, 5)} <= names


def test_x101_denoise_all_has_the_published_parameter_count():
    model = models.create_model(
        "resnext101_32x8d", num_classes=1000,
        denoise={"kind": "dot_product", "embed": False,
                 "where": "after_block"})
    assert _trainable(model) == 126_801_704
    denoise = [l.name for l in model.layers if l.name.endswith("_denoise")]
    assert len(denoise) == 3 + 4 + 23 + 3
    assert "stage4_block23_denoise" in denoise


@pytest.mark.parametrize("where", ["after_stage", "after_block"])
def test_denoise_blocks_are_the_identity_at_init(where):
    kw = dict(num_classes=10, input_shape=(16, 16, 3), width=8,
              blocks=(1, 2, 1))
    plain = models.create_model("resnet20", **kw)
    noisy = models.create_model(
        "resnet20", denoise={"kind": "gaussian", "where": where}, **kw)
    for layer in plain.layers:
        noisy.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("f4")
    np.testing.assert_allclose(noisy(x), plain(x), atol=1e-6)
    assert len(noisy.layers) > len(plain.layers)


def test_input_defenses_run_before_normalization():
    therm = models.create_model(
        "resnet20", num_classes=10, input_shape=(8, 8, 3), width=8,
        blocks=(1, 1, 1), input_defenses=[
            {"class_name": "ThermometerEncoding", "config": {"levels": 4}}])
    names = [layer.name for layer in therm.layers]
    assert "normalize" not in names  # bits in {0, 1}: no mean/std
    assert therm.get_layer("stem_conv").kernel.shape[2] == 12
    squeeze = models.create_model(
        "resnet50", num_classes=10, input_shape=(32, 32, 3), width=8,
        blocks=(1, 1, 1, 1),
        input_defenses=[{"class_name": "BitDepthReduction",
                         "config": {"bits": 3}}])
    names = [layer.name for layer in squeeze.layers]
    assert names.index("normalize") > names.index(
        next(n for n in names if "bit_depth" in n))


def test_sap_after_chosen_stages_is_random_at_inference():
    model = models.create_model(
        "resnet20", num_classes=10, input_shape=(8, 8, 3), width=8,
        blocks=(1, 1, 1), sap={"stages": (1, 2), "ratio": 1.0, "seed": 1})
    assert {"stage1_sap", "stage2_sap"} <= {l.name for l in model.layers}
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("f4")
    assert not np.allclose(model(x), model(x))


@pytest.mark.parametrize("kwargs,match", [
    ({"denoise": {"kind": "gausian"}}, "denoise kind must be one of"),
    ({"denoise": {"kind": "mean", "where": "everywhere"}},
     "where must be one of"),
    ({"denoise": {"kind": "mean", "embedding": True}}, "unknown keys"),
    ({"sap": {"stages": (4,)}}, r"subset of \(1, 2, 3\)"),
    ({"input_defenses": [{"class_name": "Dropout"}]},
     "class_name must be one of"),
])
def test_bad_hook_specs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.create_model("resnet20", num_classes=10, width=8,
                            blocks=(1, 1, 1), **kwargs)
