r"""Trains a recipe: flags -> recipe -> strategy -> data -> model -> fit().

    python train.py --recipe=pgd_at_cnn_fmnist --workdir=/tmp/pgd
    python train.py --recipe=pgd_at_cnn_fmnist:smoke --workdir=/tmp/smoke \
        --recipe.attack.steps=3 --strategy=mirrored
    python train.py --recipe=pgd_at_cnn_fmnist --workdir=/tmp/ft \
        --init_checkpoint=denoise_resnet152.xie2019_in1k --freeze=stem,stage2 \
        --recipe.data.image_size=64 --recipe.data.channels=3

`--recipe=NAME[:ARG]` names a module of `recipes/` (or a path to a config
file); `--recipe.a.b=VALUE` overrides a field (VALUE must be a literal of the
field's type: write eps as 0.0313725, not 8/255). The workdir receives the
resolved config, checkpoints, backups, logs and the final `model.keras`. A
killed run resumes from its backup when rerun with the same command; a
finished run is never overwritten.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import recipes  # noqa: E402
from training import distribute, run_flags  # noqa: E402

_RECIPE = config_flags.DEFINE_config_file(
    "recipe", None, "Recipe NAME[:ARG] or path/to/config.py[:ARG].")
_WORKDIR, _STRATEGY, _TPU = (run_flags.WORKDIR, run_flags.STRATEGY,
                             run_flags.TPU)
_INIT = flags.DEFINE_string(
    "init_checkpoint", None, "Fine-tune from these weights: a registered "
    "checkpoint (checkpoints.list_checkpoints()), a tensorpack .npz, a "
    ".keras model or keras_applications.NAME[:WEIGHTS_FILE]. A new head "
    "replaces the checkpoint's when the class count differs; the recipe's "
    "model section is then not used. Sets init.checkpoint.")
_FREEZE = flags.DEFINE_list(
    "freeze", None, "With --init_checkpoint: layer-name prefixes to freeze "
    "(e.g. stem,stage2). Sets init.freeze.")


def expand_recipe_name(argv: list[str]) -> list[str]:
    """Rewrites `--recipe=NAME[:ARG]` into the path of `recipes/NAME.py`.

    Raises:
        SystemExit: unknown recipe name, with the list of recipes.
    """
    out = []
    for a in argv:
        if a.startswith("--recipe=") and not a.split("=", 1)[1].startswith(
                ("/", ".")) and ".py" not in a:
            name, sep, arg = a.split("=", 1)[1].partition(":")
            try:
                a = f"--recipe={recipes.recipe_path(name)}{sep}{arg}"
            except KeyError as e:
                sys.exit(f"error: {e.args[0]}")
        out.append(a)
    return out


def prepare_workdir(workdir: pathlib.Path, config_json: str,
                    write: bool = True) -> None:
    """Creates the workdir and writes `config.json`, or checks that it holds
    this same unfinished run. `write=False` only checks (train.py checks
    first and writes once the model has been built, so that a config that
    fails to build leaves no `config.json` behind to block its fix).

    Raises:
        ValueError: the run there finished (`model.keras` exists) or was
            started with a different config.
    """
    if (workdir / "model.keras").exists():
        raise ValueError(f"{workdir} holds a finished run (model.keras); "
                         "choose a fresh --workdir")
    saved = workdir / "config.json"
    if saved.exists() and saved.read_text() != config_json:
        raise ValueError(f"{workdir} holds a run with a different config "
                         f"({saved}); rerun with that config to resume, or "
                         "choose a fresh --workdir")
    if write:
        workdir.mkdir(parents=True, exist_ok=True)
        saved.write_text(config_json)


def main(argv):
    del argv
    cfg = _RECIPE.value
    if _INIT.value:
        cfg.init.checkpoint = _INIT.value
    if _FREEZE.value:
        cfg.init.freeze = tuple(_FREEZE.value)
    if cfg.init.freeze and not cfg.init.checkpoint:
        raise app.UsageError("--freeze needs --init_checkpoint")
    # The strategy comes first: MultiWorkerMirroredStrategy must be created
    # before any other TensorFlow op runs.
    strategy = distribute.get_strategy(_STRATEGY.value, tpu=_TPU.value)

    import keras

    import data

    # ---------------------------------------------------------------- setup
    logging.info("recipe:\n%s", cfg)
    workdir = pathlib.Path(_WORKDIR.value)
    if not distribute.is_chief(strategy):  # non-chief workers write apart
        workdir = workdir / "workers" / distribute.worker_id(strategy)
    config_json = cfg.to_json_best_effort(indent=2, sort_keys=True)
    prepare_workdir(workdir, config_json, write=False)
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.runtime.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    replicas = strategy.num_replicas_in_sync
    batch = cfg.data.global_batch_size
    if batch % replicas:
        raise ValueError(f"data.global_batch_size={batch} is not divisible "
                         f"by the {replicas} replicas of --strategy="
                         f"{_STRATEGY.value}")

    # ----------------------------------------------------------------- data
    info = data.get_info(cfg.data.name)
    common = dict(data_dir=cfg.data.data_dir, image_size=cfg.data.image_size,
                  channels=cfg.data.channels)
    num_train = cfg.data.num_train_examples or info.num_train
    steps_per_epoch = cfg.train.steps_per_epoch or num_train // batch
    ds_train = data.get_backend_dataset(
        cfg.data.name, "train", batch_size=batch, shuffle=True,
        augment=cfg.data.augment, seed=cfg.train.seed, drop_remainder=True,
        repeat=True, num_examples=cfg.data.num_train_examples, **common)
    ds_eval = data.get_backend_dataset(
        cfg.data.name, "test", batch_size=batch, drop_remainder=True,
        num_examples=cfg.data.num_eval_examples, **common)

    # ----------------------------------------------------------- stage(s)
    # Defensive distillation trains a teacher first, in <workdir>/teacher
    # (reused, not retrained, when a resumed run finds it finished).
    teacher = None
    if cfg.train.method == "distillation":
        teacher_dir = workdir / "teacher"
        if (teacher_dir / "model.keras").exists():
            with strategy.scope():
                teacher = keras.saving.load_model(teacher_dir / "model.keras")
        else:
            prepare_workdir(teacher_dir, config_json, write=False)
            teacher = fit_stage(cfg, teacher_dir, config_json, strategy,
                                ds_train, ds_eval, info, steps_per_epoch,
                                teacher=None)
    fit_stage(cfg, workdir, config_json, strategy, ds_train, ds_eval, info,
              steps_per_epoch, teacher=teacher)
    print(f"\nNext: python evaluate.py --workdir={_WORKDIR.value}")


def fit_stage(cfg, workdir, config_json, strategy, ds_train, ds_eval, info,
              steps_per_epoch, teacher):
    """Builds, trains and saves one network in `workdir` (which receives
    `config_json` once the model is built); returns it."""
    import keras

    import checkpoints
    import data
    import models
    import training
    from training import optimization
    from training.callbacks import build_callbacks
    from training.catastrophic_overfitting import CatastrophicOverfittingStop

    # ---------------------------------------------------------------- model
    x_spec = ds_train.element_spec[0]
    channels = x_spec.shape[-1]
    stats = {k: tuple(v) * (channels // len(v)) for k, v in
             (("mean", info.mean), ("std", info.std))}
    with strategy.scope():
        if cfg.init.checkpoint:  # fine-tuning: the checkpoint's network
            logging.info("init from %s (recipe model %r not used)",
                         cfg.init.checkpoint, cfg.model.name)
            net = checkpoints.adapt(
                checkpoints.load(cfg.init.checkpoint,
                                 input_shape=tuple(x_spec.shape[1:])),
                input_shape=x_spec.shape[1:], num_classes=info.num_classes,
                freeze=cfg.init.freeze)
        else:
            net = models.create_model(
                cfg.model.name, num_classes=info.num_classes,
                input_shape=tuple(x_spec.shape[1:]),
                **{**stats, **cfg.model.kwargs.to_dict()})
        model, loss, metrics = training.build_trainer(cfg, net, teacher)
        model.build(x_spec.shape)
        model.compile(
            optimizer=optimization.build_optimizer(
                cfg.optimizer, cfg.schedule, steps_per_epoch, cfg.train.epochs),
            loss=loss, metrics=metrics, jit_compile=cfg.runtime.jit_compile)
    net.summary(print_fn=logging.info)
    prepare_workdir(workdir, config_json)

    # ------------------------------------------------------------------ fit
    callbacks = build_callbacks(workdir, cfg.train.backup_every_steps)
    overfit = None
    if cfg.train.overfit_check is not None:  # Wong et al. 2020 early stop
        check = cfg.train.overfit_check
        x_chk, y_chk = next(iter(data.get_backend_dataset(
            cfg.data.name, "train", batch_size=check.examples,
            num_examples=check.examples, data_dir=cfg.data.data_dir,
            image_size=cfg.data.image_size, channels=cfg.data.channels)))
        overfit = CatastrophicOverfittingStop(
            keras.ops.convert_to_numpy(x_chk),
            keras.ops.convert_to_numpy(y_chk), check.attack.to_dict(),
            check.max_drop)
        callbacks.insert(0, overfit)  # restores weights before checkpoints
    start = time.time()
    history = model.fit(
        ds_train, epochs=cfg.train.epochs, steps_per_epoch=steps_per_epoch,
        validation_data=ds_eval, shuffle=False, callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2)

    # ----------------------------------------------------------------- save
    last = {k: v[-1] for k, v in history.history.items() if v}
    stopped_early = overfit is not None and overfit.stopped_epoch is not None
    if ((model.stop_training and not stopped_early)
            or not all(map(math.isfinite, last.values()))):
        raise FloatingPointError(
            f"training stopped on a non-finite loss ({last}); the last good "
            f"state is in {workdir / 'checkpoints'} and {workdir / 'backup'}")
    net.save(workdir / "model.keras")
    (workdir / "train_summary.json").write_text(json.dumps(
        {"epochs": cfg.train.epochs, "steps_per_epoch": steps_per_epoch,
         "replicas": strategy.num_replicas_in_sync,
         "fit_seconds": round(time.time() - start, 1),
         "stopped_early_epoch": overfit.stopped_epoch if overfit else None,
         "final_logs": last}, indent=2))
    logging.info("saved %s", workdir / "model.keras")
    return net

if __name__ == "__main__":
    flags.mark_flags_as_required(["recipe", "workdir"])
    sys.argv = expand_recipe_name(sys.argv)
    app.run(main)
