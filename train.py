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

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import recipes  # noqa: E402
from core import cli, paths  # noqa: E402
from core.errors import UserError  # noqa: E402
from recipes import ranges  # noqa: E402
from training import distribute, run_flags  # noqa: E402

_RECIPE = config_flags.DEFINE_config_file(
    "recipe", None, "Recipe NAME[:ARG] or path/to/config.py[:ARG].")
_WORKDIR, _STRATEGY, _TPU = (run_flags.WORKDIR, run_flags.STRATEGY,
                             run_flags.TPU)
_TRUST = run_flags.TRUST_SHA256
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
        UserError: unknown recipe name, with the list of recipes.
    """
    out = []
    for a in argv:
        if a.startswith("--recipe=") and not a.split("=", 1)[1].startswith(
                ("/", ".")) and ".py" not in a:
            name, sep, arg = a.split("=", 1)[1].partition(":")
            try:
                a = f"--recipe={recipes.recipe_path(name)}{sep}{arg}"
            except KeyError as e:
                raise UserError(f"--recipe={name}: {e.args[0]}") from None
        out.append(a)
    return out


def prepare_workdir(workdir: pathlib.Path, config_json: str,
                    write: bool = True) -> None:
    """Creates the workdir and writes `config.json`, or checks that it holds
    this same unfinished run. `write=False` only checks (train.py checks
    first and writes once the model has been built, so that a config that
    fails to build leaves no `config.json` behind to block its fix).

    Raises:
        UserError: the workdir is a file or not writable, the run there
            finished (`model.keras` exists) or was started with a different
            config.
    """
    paths.check_output_dir(workdir, "--workdir")
    if (workdir / "model.keras").exists():
        raise UserError(f"--workdir={workdir} holds a finished run "
                        "(model.keras); choose a fresh --workdir")
    saved = workdir / "config.json"
    if saved.exists() and saved.read_text() != config_json:
        raise UserError(f"--workdir={workdir} holds a run with a different "
                        f"config ({saved}); rerun with that config to "
                        "resume, or choose a fresh --workdir")
    if write:
        workdir.mkdir(parents=True, exist_ok=True)
        if not saved.exists():
            from core import atomic_write

            atomic_write.write_text(saved, config_json)


def check_recipe(cfg) -> None:
    """Checks every field of the resolved recipe before any work: the
    ranges of `recipes.ranges`, then the names that registries hold (model,
    dataset, method, attacks).

    Raises:
        UserError: the first bad field, its value and the accepted ones.
    """
    try:
        ranges.check_config(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    import data

    try:
        info = data.get_info(cfg.data.name)
    except ValueError as e:
        raise UserError(f"recipe field data.name: {e}") from None
    if cfg.data.channels not in (None, info.image_shape[-1], 3):
        raise UserError(f"recipe field data.channels={cfg.data.channels!r} "
                        f"is not accepted for {cfg.data.name}; expected "
                        f"None, {info.image_shape[-1]} or 3")
    import attacks
    import models
    import training

    if not cfg.init.checkpoint and cfg.model.name not in models.list_models():
        raise UserError(f"recipe field model.name={cfg.model.name!r} is not "
                        f"accepted; expected one of {models.list_models()}")
    if cfg.train.method not in training.list_methods():
        raise UserError(f"recipe field train.method={cfg.train.method!r} is "
                        f"not accepted; expected one of "
                        f"{training.list_methods()}")
    for where in ranges.ATTACK_SECTIONS:
        node = cfg
        for key in where.split("."):
            node = node.get(key) if node is not None else None
        if node is None:
            continue
        kwargs = {k: v for k, v in node.to_dict().items()
                  if k not in ("target", "prob_start_from_clean")}
        try:
            attacks.from_config(kwargs)
        except (KeyError, TypeError) as e:
            raise UserError(f"recipe field {where}: {e.args[0]}") from None


def main(argv):
    del argv
    cfg = _RECIPE.value
    if _INIT.value:
        cfg.init.checkpoint = _INIT.value
    if _FREEZE.value:
        cfg.init.freeze = tuple(_FREEZE.value)
    if cfg.init.freeze and not cfg.init.checkpoint:
        raise UserError("--freeze needs --init_checkpoint")
    workdir = pathlib.Path(_WORKDIR.value)
    paths.check_output_dir(workdir, "--workdir")
    check_recipe(cfg)
    config_json = cfg.to_json_best_effort(indent=2, sort_keys=True)
    prepare_workdir(workdir, config_json, write=False)
    # The strategy comes first: MultiWorkerMirroredStrategy must be created
    # before any other TensorFlow op runs.
    try:
        strategy = distribute.get_strategy(_STRATEGY.value, tpu=_TPU.value)
    except ValueError as e:
        raise UserError(f"--strategy={_STRATEGY.value}: {e}") from None

    import keras

    import data

    # ---------------------------------------------------------------- setup
    logging.info("recipe:\n%s", cfg)
    if not distribute.is_chief(strategy):  # non-chief workers write apart
        workdir = workdir / "workers" / distribute.worker_id(strategy)
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.runtime.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    replicas = strategy.num_replicas_in_sync
    batch = cfg.data.global_batch_size
    if batch % replicas:
        raise UserError(f"recipe field data.global_batch_size={batch} is not "
                        f"divisible by the {replicas} replicas of "
                        f"--strategy={_STRATEGY.value}")

    # ----------------------------------------------------------------- data
    info = data.get_info(cfg.data.name)
    ds_train, ds_eval, steps_per_epoch = _datasets(cfg, info, batch)

    # ----------------------------------------------------------- stage(s)
    if cfg.get("defense") is not None:
        _defense_run(cfg, workdir, config_json, strategy, ds_train, ds_eval,
                     info, steps_per_epoch)
        return
    # Defensive distillation trains a teacher first, in <workdir>/teacher
    # (reused, not retrained, when a resumed run finds it finished).
    teacher = None
    if cfg.train.method == "distillation":
        teacher_dir = workdir / "teacher"
        if (teacher_dir / "model.keras").exists():
            import checkpoints

            with strategy.scope():
                teacher = checkpoints.load_model_file(
                    teacher_dir / "model.keras")
        else:
            prepare_workdir(teacher_dir, config_json, write=False)
            teacher = fit_stage(cfg, teacher_dir, config_json, strategy,
                                ds_train, ds_eval, info, steps_per_epoch,
                                teacher=None)
    fit_stage(cfg, workdir, config_json, strategy, ds_train, ds_eval, info,
              steps_per_epoch, teacher=teacher)
    print(f"\nNext: python evaluate.py --workdir={_WORKDIR.value}")


def _defense_run(cfg, workdir, config_json, strategy, ds_train, ds_eval,
                 info, steps_per_epoch):
    """A recipe with a `defense` section: the classifier (`defense.
    classifier`, else trained here in <workdir>/classifier and reused by a
    rerun), then training.defense_stage builds, calibrates and saves the
    detection system or purified model.

    Raises:
        UserError: the defense's output exists, or its stage refuses the
            recipe.
    """
    import checkpoints
    from core.errors import UserError
    from training import defense_stage

    out = defense_stage.output_path(cfg, workdir)
    if out.exists():
        raise UserError(f"--workdir={workdir} holds a finished run ({out}); "
                        "choose a fresh --workdir")
    if cfg.defense.classifier:
        paths.check_input_file(cfg.defense.classifier,
                               "recipe field defense.classifier")
        classifier = checkpoints.load_model_file(cfg.defense.classifier)
    else:
        cdir = workdir / "classifier"
        if (cdir / "model.keras").exists():
            classifier = checkpoints.load_model_file(cdir / "model.keras")
        else:
            prepare_workdir(cdir, config_json, write=False)
            classifier = fit_stage(cfg, cdir, config_json, strategy,
                                   ds_train, ds_eval, info, steps_per_epoch,
                                   teacher=None)
    prepare_workdir(workdir, config_json)
    try:
        defense_stage.fit_defense(cfg, classifier, workdir)
    except (ValueError, FileExistsError) as e:
        raise UserError(str(e)) from None
    if cfg.defense.name in ranges.DETECTORS:
        print(f"\nNext: python evaluate.py --model={out}")


def _datasets(cfg, info, batch):
    """(repeated shuffled train dataset, eval dataset, steps per epoch).

    Raises:
        UserError: a batch larger than the data, or missing data files.
    """
    import data

    common = dict(data_dir=cfg.data.data_dir, image_size=cfg.data.image_size,
                  channels=cfg.data.channels)
    num_train = cfg.data.num_train_examples or info.num_train
    steps_per_epoch = cfg.train.steps_per_epoch or num_train // batch
    num_eval = cfg.data.num_eval_examples or info.num_test
    if batch > min(num_train, num_eval):
        raise UserError(f"recipe field data.global_batch_size={batch} is "
                        f"larger than the {num_train} training or {num_eval} "
                        "evaluation examples (data.num_train_examples / "
                        "num_eval_examples)")
    try:
        ds_train = data.get_backend_dataset(
            cfg.data.name, "train", batch_size=batch, shuffle=True,
            augment=cfg.data.augment, seed=cfg.train.seed,
            drop_remainder=True, repeat=True,
            num_examples=cfg.data.num_train_examples, **common)
        ds_eval = data.get_backend_dataset(
            cfg.data.name, "test", batch_size=batch, drop_remainder=True,
            num_examples=cfg.data.num_eval_examples, **common)
    except (FileNotFoundError, data.DatasetNotFoundError) as e:
        raise UserError(f"recipe data section: {e}") from None
    return ds_train, ds_eval, steps_per_epoch


def build_network(cfg, strategy, x_spec, info):
    """The network to train: the recipe's model, or `--init_checkpoint`'s
    adapted to the data.

    Raises:
        UserError: a bad model section or checkpoint.
    """
    import checkpoints
    import models

    channels = x_spec.shape[-1]
    stats = {k: tuple(v) * (channels // len(v)) for k, v in
             (("mean", info.mean), ("std", info.std))}
    with strategy.scope():
        if cfg.init.checkpoint:  # fine-tuning: the checkpoint's network
            logging.info("init from %s (recipe model %r not used)",
                         cfg.init.checkpoint, cfg.model.name)
            net = checkpoints.load(cfg.init.checkpoint,
                                   input_shape=tuple(x_spec.shape[1:]),
                                   trust_sha256=_TRUST.value)
            return checkpoints.adapt(
                net, input_shape=x_spec.shape[1:],
                num_classes=info.num_classes, freeze=cfg.init.freeze)
        try:
            return models.create_model(
                cfg.model.name, num_classes=info.num_classes,
                input_shape=tuple(x_spec.shape[1:]),
                **{**stats, **cfg.model.kwargs.to_dict()})
        except (TypeError, ValueError) as e:
            raise UserError(f"recipe model section (model.name="
                            f"{cfg.model.name!r}, model.kwargs="
                            f"{cfg.model.kwargs.to_dict()}): {e}") from None


def _fit_phases(state, epochs, steps_per_epoch):
    """`(initial_epoch, epochs, steps_per_epoch, batches_to_skip)` of the
    `fit` calls that finish a run from `state` (module training.resume)."""
    if state is None:
        return [(0, epochs, steps_per_epoch, 0)]
    phases = []
    epoch = state.epoch
    if state.step:
        phases.append((epoch, epoch + 1, steps_per_epoch - state.step,
                       state.global_step))
        epoch += 1
    phases.append((epoch, epochs, steps_per_epoch, epoch * steps_per_epoch))
    return [p for p in phases if p[0] < p[1]]


def fit_stage(cfg, workdir, config_json, strategy, ds_train, ds_eval, info,
              steps_per_epoch, teacher):
    """Builds, trains and saves one network in `workdir` (which receives
    `config_json` once the model is built), resuming from its backup;
    returns it.

    Raises:
        UserError: training diverged (no model.keras is written).
        SystemExit(130): stopped by Ctrl-C, after saving the resume state.
    """
    import training
    from core import atomic_write
    from training import optimization, resume
    from training.callbacks import build_callbacks

    # ---------------------------------------------------------------- model
    x_spec = ds_train.element_spec[0]
    net = build_network(cfg, strategy, x_spec, info)
    with strategy.scope():
        model, loss, metrics = training.build_trainer(cfg, net, teacher)
        model.build(x_spec.shape)
        model.compile(
            optimizer=optimization.build_optimizer(
                cfg.optimizer, cfg.schedule, steps_per_epoch, cfg.train.epochs),
            loss=loss, metrics=metrics, jit_compile=cfg.runtime.jit_compile)
    net.summary(print_fn=logging.info)
    try:
        state = resume.read_state(workdir / "backup", steps_per_epoch)
    except ValueError as e:
        raise UserError(str(e)) from None
    if state is not None:
        with strategy.scope():
            resume.restore(model, workdir / "backup", state)
        resume.trim_epoch_log(workdir / "log.csv", state)
        print(f"resuming {workdir} at epoch {state.epoch} step {state.step} "
              f"(step {state.global_step} of the run)", flush=True)
    prepare_workdir(workdir, config_json)

    # ------------------------------------------------------------------ fit
    callbacks = build_callbacks(workdir, cfg.train.backup_every_steps,
                                steps_per_epoch, state, cfg.train.max_loss)
    diverge = callbacks[0]
    backup = next(c for c in callbacks if isinstance(c, resume.Backup))
    overfit = _overfit_check(cfg)
    if overfit is not None:
        callbacks.insert(0, overfit)  # restores weights before checkpoints
    start = time.time()
    logs = _fit(model, ds_train, ds_eval, callbacks, state, cfg,
                steps_per_epoch)
    if backup.save_requested:
        saved = backup.saved
        where = (f"epoch {saved.epoch} step {saved.step}" if saved else
                 "its last backup")
        print(f"interrupted: saved the state at {where} in "
              f"{workdir / 'backup'}; resume with the same command: "
              f"{' '.join(sys.argv)}", file=sys.stderr, flush=True)
        sys.exit(cli.INTERRUPT_EXIT)
    stopped_early = overfit is not None and overfit.stopped_epoch is not None
    _check_converged(cfg, workdir, model, net, diverge, logs, stopped_early)
    with atomic_write.replacing(workdir / "model.keras",
                                exclusive=True) as tmp:
        net.save(tmp)
    atomic_write.write_text(workdir / "train_summary.json", json.dumps(
        {"epochs": cfg.train.epochs, "steps_per_epoch": steps_per_epoch,
         "replicas": strategy.num_replicas_in_sync,
         "resumed_from": None if state is None else
         {"epoch": state.epoch, "step": state.step},
         "fit_seconds": round(time.time() - start, 1),
         "stopped_early_epoch": overfit.stopped_epoch if overfit else None,
         "final_logs": logs}, indent=2))
    logging.info("saved %s", workdir / "model.keras")
    return net


def _overfit_check(cfg):
    """The catastrophic-overfitting early stop of `train.overfit_check`
    (Wong et al. 2020), or None."""
    if cfg.train.overfit_check is None:
        return None
    import keras

    import data
    from training.catastrophic_overfitting import CatastrophicOverfittingStop

    check = cfg.train.overfit_check
    x_chk, y_chk = next(iter(data.get_backend_dataset(
        cfg.data.name, "train", batch_size=check.examples,
        num_examples=check.examples, data_dir=cfg.data.data_dir,
        image_size=cfg.data.image_size, channels=cfg.data.channels)))
    return CatastrophicOverfittingStop(
        keras.ops.convert_to_numpy(x_chk), keras.ops.convert_to_numpy(y_chk),
        check.attack.to_dict(), check.max_drop)


def _fit(model, ds_train, ds_eval, callbacks, state, cfg, steps_per_epoch):
    """Runs the `fit` phases from `state` (Ctrl-C saves and stops);
    returns the last epoch's logs."""
    logs = {}
    with _save_on_interrupt(callbacks):
        for first, last, steps, skip in _fit_phases(
                state, cfg.train.epochs, steps_per_epoch):
            history = model.fit(
                ds_train.skip(skip) if skip else ds_train, epochs=last,
                initial_epoch=first, steps_per_epoch=steps,
                validation_data=ds_eval, shuffle=False, callbacks=callbacks,
                verbose=1 if sys.stdout.isatty() else 2)
            logs = {k: v[-1] for k, v in history.history.items() if v}
            if model.stop_training:
                break
    return logs


def _check_converged(cfg, workdir, model, net, diverge, logs, stopped_early):
    """Refuses to save a run that diverged or stopped on a bad state.

    Raises:
        UserError: naming where it diverged and where the last good state
            is.
    """
    from training.callbacks import weights_finite

    bad = diverge.diverged or not all(
        math.isfinite(float(v)) for v in logs.values())
    if not (bad or (model.stop_training and not stopped_early)
            or not weights_finite(net)):
        return
    where = (f" at epoch {diverge.diverged[0]} step {diverge.diverged[1]}"
             f" (loss {diverge.diverged[2]:.4g} > train.max_loss="
             f"{cfg.train.max_loss:g} or not finite)"
             if diverge.diverged else f" (final logs {logs})")
    raise UserError(
        f"training diverged{where}; model.keras was not written, and "
        f"the last good state stays in {workdir / 'backup'} and "
        f"{workdir / 'checkpoints'}; lower optimizer.learning_rate")


class _save_on_interrupt:
    """Within it, the first Ctrl-C (SIGINT) asks `backup` to save the state
    at the end of the current step and stop `fit`; a second one interrupts
    at once."""

    def __init__(self, callbacks):
        from training.resume import Backup

        self.backup = next(c for c in callbacks if isinstance(c, Backup))

    def _handle(self, signum, frame):
        import signal

        del frame
        print("\nCtrl-C: saving the state after this step (press again to "
              "abort without saving)", file=sys.stderr, flush=True)
        self.backup.request_save()
        signal.signal(signum, self.previous)

    def __enter__(self):
        import signal

        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        signal.signal(signal.SIGINT, self.previous)
        return False


if __name__ == "__main__":
    flags.mark_flags_as_required(["recipe", "workdir"])
    try:
        sys.argv = expand_recipe_name(sys.argv)
    except UserError as e:
        cli.fail(str(e))
    cli.run(main)
