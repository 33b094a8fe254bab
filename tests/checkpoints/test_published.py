"""The checkpoint registry is internally consistent and agrees with the
recipes and the paper's model zoo (feature_denoising spec, Sec. 4)."""

import dataclasses

import pytest

import checkpoints
import recipes
from checkpoints.spec import CheckpointSpec, ThreatModel

XIE = ("resnet152.xie2019_in1k", "denoise_resnet152.xie2019_in1k",
       "denoise_all_resnext101.xie2019_in1k")


def test_lists_the_three_xie2019_models():
    assert checkpoints.list_checkpoints() == sorted(XIE)
    assert checkpoints.list_checkpoints("*denoise*") == sorted(XIE[1:])


@pytest.mark.parametrize("name", XIE)
def test_entry_matches_its_recipe_and_the_model_zoo(name):
    spec = checkpoints.get(name)
    cfg = recipes.get_config(spec.recipe)
    assert cfg.model.name == spec.model_kwargs["name"]
    assert (cfg.model.kwargs.to_dict().get("denoise")
            == spec.model_kwargs.get("denoise"))
    assert spec.url.startswith("https://github.com/facebookresearch/"
                               "ImageNet-Adversarial-Training/releases/")
    assert spec.url.endswith(".npz") and spec.converter == "tensorpack"
    assert spec.sha256 is None  # unpublished: recorded at first download
    assert spec.threat_model == ThreatModel("inf", 16 / 255, True)
    # accuracy falls as the attack gets longer, success rises
    acc = [spec.robust_acc[k] for k in (10, 100, 1000)]
    success = [spec.attack_success[k] for k in (10, 100, 1000)]
    assert spec.clean_acc > acc[0] > acc[1] > acc[2]
    assert success == sorted(success)
    assert spec.license == "CC-BY-NC-4.0" and "1812.03411" in spec.paper


def test_published_numbers():
    spec = checkpoints.get("denoise_resnet152.xie2019_in1k")
    assert spec.clean_acc == 65.3
    assert spec.robust_acc == {10: 55.7, 100: 45.5, 1000: 42.8}


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="denoise_resnet152.xie2019_in1k"):
        checkpoints.get("resnet50.nope")


@pytest.mark.parametrize("field,value,match", [
    ("name", "R152", "arch.tag"),
    ("sha256", "abc", "64 lowercase hex"),
    ("converter", "pickle", "converter must be one of"),
    ("url", "http://insecure/x.npz", "https://"),
])
def test_spec_validation(field, value, match):
    spec = checkpoints.get(XIE[0])
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(spec, **{field: value})


def test_threat_model_validation():
    with pytest.raises(ValueError, match="norm must be one of"):
        ThreatModel("1", 0.1, False)
    with pytest.raises(ValueError, match="eps must be in"):
        ThreatModel("inf", 16, True)  # the 0..255 scale by mistake


def test_registering_a_name_twice_fails():
    from checkpoints.published import register

    spec = checkpoints.get(XIE[0])
    with pytest.raises(KeyError, match="already registered"):
        register(spec)
    assert isinstance(spec, CheckpointSpec)
