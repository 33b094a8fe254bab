"""train.py end to end on real Fashion-MNIST (smoke recipes), under
one_device and 2-CPU mirrored, plus the workdir rules."""

import json

import h5py
import numpy as np
import pytest

import recipes
from core.errors import UserError
from tests.train_utils import final_weights, run_train

# Deterministic adversarial steps (BIM: no random start) so that runs under
# different strategies see identical adversarial examples.
# Replicas sum in another order than one device, so gradients differ at the
# 1e-7 level. Steps that take the sign of a near-zero coordinate amplify
# that to a whole step: L-inf PGD's sign(grad) on the input, and Adam's
# first updates (~lr * sign(g)). The equivalence runs therefore train with
# L2 PGD (continuous in the gradient) from x itself, and with SGD.
DETERMINISTIC = ("--recipe.attack.rand_init=False",
                 "--recipe.attack.norm=2", "--recipe.attack.eps=1.0",
                 "--recipe.attack.step_size=0.5",
                 "--recipe.optimizer.name=sgd",
                 "--recipe.optimizer.learning_rate=0.05")


# Recipes whose smoke run needs files that their own test makes first (the
# static models of ensemble AT), or whose network is too big to train twice
# here (the ImageNet ResNet-152 / ResNeXt-101): each runs its `:smoke`
# through train.py in the test named.
OWN_TEST = {
    "ensemble_at_cnn_fmnist": "tests/training/test_ensemble_at.py",
    "denoise_resnet152": "tests/recipes/test_imagenet_recipes.py",
    "resnet152_baseline": "tests/recipes/test_imagenet_recipes.py",
    "denoise_all_resnext101": "tests/recipes/test_imagenet_recipes.py",
}


# The defense recipes' smoke runs (classifier, then the defense stage) and
# their evaluation live in tests/test_defense_recipes.py.
OWN_TEST.update({r: "tests/test_defense_recipes.py"
                 for r in recipes.list_recipes()
                 if recipes.get_config(r).get("defense") is not None})

# Under MirroredStrategy, one recipe per training method (the replica path
# is the method's train step; recipes of one method differ in settings
# only), to keep CI short; every recipe runs under one_device.
MIRRORED = ("standard_cnn_fmnist", "pgd_at_cnn_fmnist", "trades_cnn_fmnist",
            "free_at_cnn_fmnist", "distillation_cnn_fmnist",
            "thermometer_at_cnn_fmnist")


def _smoke_runs():
    runs = []
    for r in recipes.list_recipes():
        if r not in OWN_TEST:
            runs.append((r, "one_device"))
            if r in MIRRORED:
                runs.append((r, "mirrored"))
    return runs


def test_mirrored_sample_covers_every_method():
    methods = {recipes.get_config(r).train.method
               for r in recipes.list_recipes() if r not in OWN_TEST}
    assert methods == {recipes.get_config(r).train.method for r in MIRRORED}


@pytest.mark.parametrize("recipe,strategy", _smoke_runs())
def test_smoke_recipe_trains(tmp_path, recipe, strategy):
    run_train(tmp_path, f"{recipe}:smoke", strategy=strategy)
    for name in ("config.json", "model.keras", "log.csv",
                 "checkpoints/last.keras", "backup", "tensorboard"):
        assert (tmp_path / name).exists(), name
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["replicas"] == (2 if strategy == "mirrored" else 1)
    assert np.isfinite(summary["final_logs"]["loss"])


def test_recipes_left_out_above_have_their_own_test():
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    for recipe, test in OWN_TEST.items():
        if recipe in recipes.list_recipes():
            assert f"{recipe}:smoke" in (root / test).read_text(), recipe


def test_mirrored_equals_one_device(tmp_path):
    run_train(tmp_path / "one", "pgd_at_cnn_fmnist:smoke", *DETERMINISTIC)
    run_train(tmp_path / "two", "pgd_at_cnn_fmnist:smoke", *DETERMINISTIC,
              strategy="mirrored")
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_refuses_to_overwrite_a_finished_run(tmp_path):
    run_train(tmp_path, "standard_cnn_fmnist:smoke")
    before = (tmp_path / "model.keras").read_bytes()
    with pytest.raises(ValueError, match="holds a finished run"):
        run_train(tmp_path, "standard_cnn_fmnist:smoke")
    assert (tmp_path / "model.keras").read_bytes() == before


def test_refuses_a_different_config_in_the_same_workdir(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="different config"):
        run_train(tmp_path, "standard_cnn_fmnist:smoke")
    assert (tmp_path / "config.json").read_text() == "{}"


def test_batch_must_divide_the_replicas(tmp_path):
    with pytest.raises(ValueError, match=r"global_batch_size=33 is not "
                       r"divisible by the 2 replicas"):
        run_train(tmp_path, "standard_cnn_fmnist:smoke",
                  "--recipe.data.global_batch_size=33", strategy="mirrored")


def test_unknown_recipe_and_key(tmp_path):
    import train

    with pytest.raises(UserError, match="unknown recipe 'pgd_at_cnn'; "
                       r"available: \["):
        train.expand_recipe_name(["--recipe=pgd_at_cnn:smoke"])
    with pytest.raises(Exception, match="stepz"):
        run_train(tmp_path, "pgd_at_cnn_fmnist:smoke",
                  "--recipe.attack.stepz=3")


def test_nan_stops_without_writing_a_final_model(tmp_path):
    with pytest.raises(UserError, match="diverged"):
        run_train(tmp_path, "standard_cnn_fmnist:smoke",
                  "--recipe.optimizer.learning_rate=1e30",
                  "--recipe.optimizer.name=sgd")
    assert not (tmp_path / "model.keras").exists()
    # The run diverged in its first epoch: no epoch checkpoint, and any
    # backup holds finite weights only.
    assert not (tmp_path / "checkpoints" / "last.keras").exists()
    for path in (tmp_path / "backup").glob("*.weights.h5"):
        with h5py.File(path) as f:
            arrays = []
            f.visititems(lambda _, v: arrays.append(np.asarray(v))
                         if isinstance(v, h5py.Dataset) else None)
        assert all(np.isfinite(a).all() for a in arrays
                   if a.dtype.kind == "f")


def test_a_config_that_fails_to_build_leaves_no_config_behind(tmp_path):
    """Fixing the bad value and rerunning in the same workdir works."""
    with pytest.raises(ValueError, match="train.method='nope'"):
        run_train(tmp_path, "standard_cnn_fmnist:smoke",
                  "--recipe.train.method=nope")
    assert not (tmp_path / "config.json").exists()
    run_train(tmp_path, "standard_cnn_fmnist:smoke")
    assert (tmp_path / "model.keras").exists()
