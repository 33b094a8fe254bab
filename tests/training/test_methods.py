"""The method registry of training/: every recipe's `train.method` is
registered, and build_trainer builds each one with the right class."""

import keras
import pytest

import recipes
import training


def test_the_six_methods_are_registered():
    assert training.list_methods() == [
        "adversarial", "distillation", "ensemble", "free", "thermometer",
        "trades"]


def test_every_recipe_names_a_registered_method():
    methods = set(training.list_methods())
    for name in recipes.list_recipes():
        assert recipes.get_config(name).train.method in methods, name


@pytest.mark.parametrize("recipe, cls", [
    ("pgd_at_cnn_fmnist", "AdversarialTrainer"),
    ("standard_cnn_fmnist", "AdversarialTrainer"),
    ("free_at_cnn_fmnist", "FreeAdversarialTrainer"),
    ("trades_cnn_fmnist", "TradesTrainer"),
    ("distillation_cnn_fmnist", "DistillationTrainer"),
])
def test_build_trainer_builds_the_recipes_method(recipe, cls):
    import models

    cfg = recipes.get_config(recipe, "smoke")
    net = models.create_model(cfg.model.name, num_classes=10,
                              input_shape=(28, 28, 1),
                              **cfg.model.kwargs.to_dict())
    model, loss, metrics = training.build_trainer(cfg, net)
    assert type(model).__name__ == cls
    assert isinstance(loss, keras.losses.Loss) and metrics


def test_unknown_method_lists_the_registered_ones():
    cfg = recipes.get_config("pgd_at_cnn_fmnist", "smoke")
    cfg = cfg.copy_and_resolve_references()
    cfg.unlock()
    cfg.train.method = "madry"
    with pytest.raises(ValueError, match=r"train.method must be one of "
                                         r"\['adversarial', .*'trades'\]; "
                                         r"got 'madry'"):
        training.build_trainer(cfg, None)
