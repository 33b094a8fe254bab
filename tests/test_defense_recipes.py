"""The defense recipes end to end on real Fashion-MNIST: each `:smoke`
trains its classifier, then its defense stage (training/defense_stage.py),
and writes a calibrated detection system or a purified model that
evaluate.py scores (detection mode, or BPDA / EOT for purifiers)."""

import json

import numpy as np
import pytest

import recipes
from core.errors import UserError
from recipes import ranges
from tests.train_utils import run_evaluate, run_train

# Named in full (tests/test_train_smoke.py checks each recipe it leaves
# out of its own smoke runs is named here).
SMOKE = ("defense_gan_fmnist:smoke", "feature_squeezing_fmnist:smoke",
         "image_quilting_fmnist:smoke", "jpeg_fmnist:smoke",
         "lid_fmnist:smoke", "magnet_fmnist:smoke",
         "pixel_defend_fmnist:smoke", "specialists_fmnist:smoke",
         "tv_minimization_fmnist:smoke", "unrelated_detectors_fmnist:smoke")
DEFENSES = [s.split(":")[0] for s in SMOKE]


def test_smoke_list_is_every_defense_recipe():
    assert DEFENSES == sorted(
        r for r in recipes.list_recipes()
        if recipes.get_config(r).get("defense") is not None)



@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """One smoke classifier that every defense recipe reuses."""
    path = tmp_path_factory.mktemp("classifier")
    run_train(path, "standard_cnn_fmnist:smoke")
    return path / "model.keras"


def test_every_defense_has_a_recipe():
    names = {recipes.get_config(r).defense.name for r in DEFENSES}
    assert names == set(ranges.DEFENSES)


@pytest.mark.parametrize("recipe", DEFENSES)
def test_defense_recipe_smoke(tmp_path, recipe, classifier):
    cfg = recipes.get_config(recipe, "smoke")
    run_train(tmp_path, f"{recipe}:smoke",
              f"--recipe.defense.classifier={classifier}")
    summary = json.loads((tmp_path / "defense_summary.json").read_text())
    assert summary["defense"] == cfg.defense.name
    assert summary["train_examples"] == 300
    if cfg.defense.name in ranges.DETECTORS:
        from models.detection import load_system

        system = load_system(tmp_path / "system")
        assert np.all(np.isfinite(system.thresholds))
        assert summary["fpr_calibration"] <= cfg.defense.fpr + 1e-9
        assert set(system.config["attacks"]) == {"naive", "adaptive"}
        with pytest.raises(UserError, match="holds a finished run"):
            run_train(tmp_path, f"{recipe}:smoke",
                      f"--recipe.defense.classifier={classifier}")
    else:
        import keras

        import layers  # noqa: F401 (registers the purifiers)

        model = keras.saving.load_model(tmp_path / "model.keras")
        kinds = {type(layer).__name__ for layer in model.layers}
        assert len(kinds & set(layers.__all__)) == 1


def test_detection_report(tmp_path, classifier):
    run_train(tmp_path, "feature_squeezing_fmnist:smoke",
              f"--recipe.defense.classifier={classifier}")
    run_evaluate(f"--workdir={tmp_path}", "--num_examples=20",
                 f"--output={tmp_path / 'r' / 'fs.json'}")
    report = json.loads((tmp_path / "r" / "fs.json").read_text())
    assert report["system"] == "feature_squeezing"
    assert set(report["attacks"]) == {"naive", "adaptive"}
    assert report["attacks"]["naive"]["naive"] is True
    assert report["attacks"]["adaptive"]["naive"] is False
    for name in ("fs.md", "fs_roc.png", "fs_success_vs_l2.png"):
        assert (tmp_path / "r" / name).exists(), name
    assert "**NAIVE**" in (tmp_path / "r" / "fs.md").read_text()
    with pytest.raises(UserError, match="exists"):
        run_evaluate(f"--workdir={tmp_path}", "--num_examples=20",
                     f"--output={tmp_path / 'r' / 'fs.json'}")
    with pytest.raises(UserError, match="num_examples=6000"):
        run_evaluate(f"--model={tmp_path / 'system'}",
                     "--num_examples=6000")


@pytest.mark.parametrize("override,message", [
    ("--recipe.defense.fpr=1.5", r"defense.fpr=1.5 is not accepted"),
    ("--recipe.defense.name=nope", r"defense.name='nope' is not accepted"),
    ("--recipe.defense.calibration_examples=5", "calibration_examples=5"),
])
def test_bad_defense_fields_fail_before_training(tmp_path, override,
                                                 message):
    with pytest.raises(ValueError, match=message):
        run_train(tmp_path, "jpeg_fmnist:smoke", override)
    assert not (tmp_path / "config.json").exists()


def test_missing_classifier_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        run_train(tmp_path, "jpeg_fmnist:smoke",
                  f"--recipe.defense.classifier={tmp_path / 'none.keras'}")
