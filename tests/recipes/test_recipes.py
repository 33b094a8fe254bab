"""Every recipe loads, locks, and has the required sections."""

import pytest

import recipes

SECTIONS = ("model", "data", "attack", "optimizer", "schedule", "train",
            "eval", "runtime")


@pytest.mark.parametrize("arg", [None, "smoke"])
@pytest.mark.parametrize("name", recipes.list_recipes())
def test_recipe_loads_and_locks(name, arg):
    cfg = recipes.get_config(name, arg)
    for section in SECTIONS:
        assert section in cfg, section
    assert cfg.is_locked
    with pytest.raises(AttributeError):
        cfg.train.epochz = 3
    assert cfg.data.global_batch_size > 0
    assert cfg.eval.attack.eps > 0
    if cfg.attack is not None and "step_size" in cfg.attack:
        # <= 1.25 eps: the FGSM-RS step of Wong et al. 2020
        assert 0 < cfg.attack.step_size <= 1.25 * cfg.attack.eps + 1e-9
    module = __import__(f"recipes.{name}", fromlist=["x"])
    doc = module.__doc__
    assert "arXiv" in doc and f"--recipe={name}" in doc


def test_smoke_is_small():
    for name in recipes.list_recipes():
        cfg = recipes.get_config(name, "smoke")
        assert cfg.data.num_train_examples <= 512
        assert cfg.train.steps_per_epoch <= 5
        assert cfg.data.name == "fashion_mnist"


def test_unknown_recipe_and_arg():
    with pytest.raises(KeyError, match=r"unknown recipe 'nope'; available"):
        recipes.get_config("nope")
    with pytest.raises(ValueError, match=r"accepted: \('smoke',\)"):
        recipes.get_config("pgd_at_cnn_fmnist", "smok")


def test_madry_settings_are_written_as_in_the_papers():
    cifar = recipes.get_config("pgd_at_resnet20_cifar10")
    assert cifar.attack.eps == pytest.approx(8 / 255)
    assert cifar.attack.step_size == pytest.approx(2 / 255)
    assert cifar.attack.steps == 7 and cifar.attack.rand_init
    assert cifar.optimizer.weight_decay == 2e-4
    fmnist = recipes.get_config("pgd_at_cnn_fmnist")
    assert fmnist.attack.eps == 0.1 and fmnist.eval.attack.steps == 20
    assert fmnist.eval.attack.step_size == 0.01
