"""Config sections shared by the recipes, and the `arg` parser.

A recipe's config has the sections `model`, `data`, `attack` (None for
natural training), `optimizer`, `schedule`, `train`, `eval`, `init`
(initial weights for fine-tuning) and `runtime`.
All pixel values, `eps` and `step_size` are on the [0, 1] scale.
"""

from __future__ import annotations

from typing import Any

import ml_collections

ARGS = ("smoke",)


def parse_arg(arg: str | None) -> ml_collections.ConfigDict:
    """Parses a recipe arg: "" / None, or a comma-separated list of flags
    from `ARGS` (big_vision's `parse_arg` idea).

    Raises:
        ValueError: an unknown flag; the message lists `ARGS`.
    """
    flags = [a for a in (arg or "").split(",") if a]
    unknown = [a for a in flags if a not in ARGS]
    if unknown:
        raise ValueError(f"unknown recipe arg {unknown}; accepted: {ARGS}")
    return ml_collections.ConfigDict({a: a in flags for a in ARGS})


def base_config() -> ml_collections.ConfigDict:
    """Defaults every recipe starts from; recipes overwrite fields."""
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict({"name": "", "kwargs": {}})
    c.data = ml_collections.ConfigDict({
        "name": "",
        "global_batch_size": 128,
        "augment": False,
        "num_train_examples": ml_collections.FieldReference(None, int),
        "num_eval_examples": ml_collections.FieldReference(None, int),
        "image_size": ml_collections.FieldReference(None, int),
        "channels": ml_collections.FieldReference(None, int),
        "data_dir": ml_collections.FieldReference(None, str),
    })
    c.attack = None
    c.optimizer = ml_collections.ConfigDict({
        "name": "adam", "learning_rate": 1e-3, "momentum": 0.9,
        "nesterov": False, "weight_decay": 0.0,
        # "decoupled" (Keras: w -= lr * wd * w, outside the momentum) or
        # "l2" (wd * w added to the gradient, i.e. an L2 penalty wd/2 |w|^2
        # as in the TF1/PyTorch reference codes); kernels only either way.
        "weight_decay_mode": "decoupled",
    })
    c.schedule = ml_collections.ConfigDict({
        "name": "constant",  # constant | cosine | piecewise | cyclic
        "warmup_epochs": 0,
        "warmup_start_lr": 0.0,  # linear warmup from here to the LR
        "peak_fraction": 0.4,  # cyclic only: where the triangle peaks
        "boundaries_epochs": (),
        "decay_factor": 0.1,
    })
    c.train = ml_collections.ConfigDict({
        # A name in training.list_methods(), each a module of training/:
        # "adversarial" (AdversarialTrainer; natural training when attack is
        # None), "distillation" (teacher then student at `temperature`),
        # "free" (minibatch replay), "trades" (KL term, weight `beta`),
        # "ensemble" (static pre-trained sources), "thermometer" (LS-PGA).
        "method": "adversarial",
        "temperature": 1.0,
        "epochs": 1,
        "steps_per_epoch": ml_collections.FieldReference(None, int),
        "alpha": 0.0,  # clean-loss weight, Goodfellow et al. 2015 Eq. 6
        "label_smoothing": 0.0,
        "seed": 0,
        "backup_every_steps": 100,
        # A training loss above this stops the run as diverged (a finite
        # but exploding loss never trips the NaN stop); see ranges.FIELDS.
        "max_loss": 1e4,
        # Early stop on catastrophic overfitting (Wong et al. 2020): None,
        # or {"examples", "attack", "max_drop"}; see overfit_check().
        "overfit_check": None,
    })
    c.eval = ml_collections.ConfigDict({
        "batch_size": 500,
        "num_examples": ml_collections.FieldReference(None, int),
        "attack": pgd(eps=0.1, step_size=0.01, steps=20),
    })
    # Initial weights (train.py --init_checkpoint / --freeze set these):
    # anything `checkpoints.load` accepts, and layer-name prefixes to freeze.
    c.init = ml_collections.ConfigDict({
        "checkpoint": ml_collections.FieldReference(None, str),
        "freeze": (),
    })
    c.runtime = ml_collections.ConfigDict({
        "jit_compile": False, "mixed_precision": False,
    })
    return c


def pgd(*, eps: float, step_size: float, steps: int, norm: str = "inf",
        rand_init: bool = True, targeted: bool = False, restarts: int = 1
        ) -> ml_collections.ConfigDict:
    """A PGD attack section (Madry et al. 2018, arXiv 1706.06083)."""
    return ml_collections.ConfigDict({
        "name": "pgd", "eps": float(eps), "step_size": float(step_size),
        "steps": int(steps), "norm": norm, "rand_init": rand_init,
        "targeted": targeted, "restarts": int(restarts),
    })


def overfit_check(*, attack: ml_collections.ConfigDict, examples: int = 500,
                  max_drop: float = 0.2) -> ml_collections.ConfigDict:
    """A `train.overfit_check` section: PGD accuracy on the first `examples`
    training images at each epoch end; a drop of more than `max_drop` below
    the best restores that best epoch and stops (Wong et al. 2020, arXiv
    2001.03994, Sec. 5.3)."""
    return ml_collections.ConfigDict({
        "examples": int(examples), "attack": attack,
        "max_drop": float(max_drop)})


def madry_cnn_fmnist() -> ml_collections.ConfigDict:
    """`base_config()` with what the Fashion-MNIST CNN recipes share, so
    their rows of the model zoo compare methods, not settings: the Madry et
    al. CNN, global batch 100, Adam 1e-3 with cosine decay, 4 epochs, and
    the PGD-20 evaluation (eps 0.1, step 0.01, random start) of the base.
    Recipes overwrite what their paper changes."""
    c = base_config()
    c.model.name = "madry_cnn"
    c.data.name = "fashion_mnist"
    c.data.global_batch_size = 100
    c.optimizer.learning_rate = 1e-3
    c.schedule.name = "cosine"
    c.train.epochs = 4
    return c


def madry_cnn_smoke(c: ml_collections.ConfigDict) -> None:
    """`fmnist_smoke` with the CNN narrowed to width 8."""
    c.model.kwargs = {"width": 8}
    fmnist_smoke(c)


def fmnist_smoke(c: ml_collections.ConfigDict) -> None:
    """Shrinks `c` for smoke tests: a few hundred real Fashion-MNIST
    images, 3 steps, 2 attack steps; the recipe shrinks its own model."""
    c.data.name = "fashion_mnist"
    c.data.num_train_examples = 256
    c.data.num_eval_examples = 64
    c.data.global_batch_size = 32
    c.train.epochs = 1
    c.train.steps_per_epoch = 3
    c.train.backup_every_steps = 1
    c.eval.batch_size = 32
    c.eval.num_examples = 64
    c.eval.attack.steps = 2
    if c.attack is not None and "steps" in c.attack:
        c.attack.steps = 2
    if c.train.overfit_check is not None:
        c.train.overfit_check.examples = 32
        c.train.overfit_check.attack.steps = 2


def defense_fmnist(name: str, *, fit: dict | None = None,
                   naive_attack: dict | None = None,
                   adaptive_attack: dict | None = None,
                   fpr: float = 0.05) -> ml_collections.ConfigDict:
    """`madry_cnn_fmnist()` (the undefended classifier, naturally trained)
    plus a `defense` section (training/defense_stage.py):

    - `name`: one of `ranges.DEFENSES`;
    - `classifier`: a trained `model.keras` to reuse, or None to train the
      recipe's classifier first (in <workdir>/classifier);
    - `fpr`: the clean false-positive rate the thresholds are set at;
    - `num_train_examples`: training images the defense's own parts see
      (None: all 60000); `calibration_examples`: held-out test images
      (from index 5000) the thresholds are set on; `seed`;
    - `fit`: keyword arguments of the defense's fit / build function;
    - `naive_attack` / `adaptive_attack`: what evaluate.py runs on a
      detection system (naive: on the undefended classifier; adaptive: on
      the whole system). Purifiers are evaluated with evaluate.py's own
      attack flags (BPDA / EOT as the layers demand, `--naive` for the
      naive number).
    """
    c = madry_cnn_fmnist()
    c.defense = ml_collections.ConfigDict({
        "name": name,
        "classifier": ml_collections.FieldReference(None, str),
        "fpr": float(fpr),
        "num_train_examples": ml_collections.FieldReference(None, int),
        "calibration_examples": 5000,
        "seed": 0,
        "fit": dict(fit or {}),
        "naive_attack": dict(naive_attack or cw_l2_attack()),
        "adaptive_attack": dict(adaptive_attack or {}),
    })
    return c


def cw_l2_attack(steps: int = 100, binary_search_steps: int = 5,
                 **kwargs) -> dict:
    """C&W L2 settings (arXiv 1608.04644) for the detection studies."""
    return {"name": "cw_l2", "steps": steps,
            "binary_search_steps": binary_search_steps, **kwargs}


def joint_attack(name: str = "detector_joint", steps: int = 100,
                 binary_search_steps: int = 5, restarts: int = 2,
                 **kwargs) -> dict:
    """A detection-system attack (`attacks.list_system_attacks()`)."""
    return {"name": name, "steps": steps,
            "binary_search_steps": binary_search_steps,
            "restarts": restarts, **kwargs}


def defense_smoke(c: ml_collections.ConfigDict, **fit: Any) -> None:
    """`madry_cnn_smoke` plus a tiny defense stage: 300 training images,
    64 calibration images, few attack steps, and `fit` overrides."""
    madry_cnn_smoke(c)
    c.defense.num_train_examples = 300
    c.defense.calibration_examples = 64
    c.defense.fit.update(fit)
    for key in ("naive_attack", "adaptive_attack"):
        attack = c.defense[key]
        if "steps" in attack:
            attack.steps = 5
            attack.binary_search_steps = 2
        if "restarts" in attack:
            attack.restarts = 1


def detection_recipe(name: str, arg: str | None, *,
                     adaptive: str = "detector_joint",
                     smoke: dict | None = None) -> ml_collections.ConfigDict:
    """A detection-defense recipe: `defense_fmnist(name)` with the naive
    C&W L2 and the adaptive `adaptive` attack at 50 Adam steps x 4 values
    of c (one start), what a 2-core CPU affords for 500 images (raise them
    with evaluate.py --steps / --restarts); `arg` "smoke" applies
    `defense_smoke(c, **smoke)`. `--recipe.defense.classifier=model.keras`
    reuses a trained classifier."""
    args = parse_arg(arg)
    c = defense_fmnist(
        name, naive_attack=cw_l2_attack(steps=50, binary_search_steps=4),
        adaptive_attack=joint_attack(adaptive, steps=50,
                                     binary_search_steps=4, restarts=1))
    if args.smoke:
        defense_smoke(c, **(smoke or {}))
    return c


def purifier_recipe(name: str, arg: str | None, *, fit: dict,
                    smoke: dict | None = None) -> ml_collections.ConfigDict:
    """An input-purifier recipe: `defense_fmnist(name, fit=fit)`; `arg`
    "smoke" applies `defense_smoke(c, **smoke)`. evaluate.py scores it with
    the base recipe's PGD-20 (L-inf eps 0.1, step 0.01, random start)
    through BPDA / EOT as the purifier's flags demand (`--naive`: the
    defense-unaware number); `--recipe.defense.classifier=model.keras`
    reuses a trained classifier."""
    args = parse_arg(arg)
    c = defense_fmnist(name, fit=fit)
    if args.smoke:
        defense_smoke(c, **(smoke or {}))
    return c
