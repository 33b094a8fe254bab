r"""Measures a trained model: clean accuracy and robust accuracy under an
attack, over the full test split (or the first --num_examples images).

    python evaluate.py --workdir=/tmp/pgd                # recipe's eval attack
    python evaluate.py --workdir=/tmp/pgd --steps=100 --restarts=5
    python evaluate.py --model=/path/model.keras --dataset=fashion_mnist \
        --eps=0.1 --step_size=0.01 --steps=20
    python evaluate.py --checkpoint=denoise_resnet152.xie2019_in1k \
        --suite=caad_targeted --steps=10,100 --num_examples=1000

The threat model (attack, norm, eps, steps, step size, restarts, targeted)
comes from the recipe's `eval.attack`, each field overridable by a flag.
Prints a table and writes a JSON report under <workdir>/reports/ (a new file
for every run; nothing is overwritten).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

from core import atomic_write, cli, paths  # noqa: E402
from core.errors import UserError  # noqa: E402
from recipes import ranges  # noqa: E402
from training import distribute, run_flags  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "A .keras model file.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A published checkpoint (checkpoints."
    "list_checkpoints(); its dataset, input size and targeted PGD threat "
    "model are the defaults), or a tensorpack .npz / keras_applications."
    "NAME (then give --dataset and the attack flags). Reports go to "
    "reports/<checkpoint>/ unless --output is given.")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset (default: recipe's).")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "With --checkpoint: build the model at and resize "
    "the data to this size (default: the registry's input size, else 224).")
_WORKDIR, _STRATEGY, _TPU = (run_flags.WORKDIR, run_flags.STRATEGY,
                             run_flags.TPU)
_TRUST = run_flags.TRUST_SHA256
_ATTACK = flags.DEFINE_string("attack", None, "Attack name (default: pgd).")
_EPS = flags.DEFINE_float("eps", None, "Budget on the [0, 1] pixel scale.")
_STEP_SIZE = flags.DEFINE_float("step_size", None, "Step size, [0, 1] scale.")
_STEPS = flags.DEFINE_list(
    "steps", None, "Attack iterations; a list (e.g. 10,100,1000) for "
    "--suite=caad_targeted and --curves.")
_NORM = flags.DEFINE_enum("norm", None, ["inf", "2"], "Threat-model norm.")
_RESTARTS = flags.DEFINE_integer("restarts", None, "Random restarts.")
_TARGETED = flags.DEFINE_bool("targeted", None, "Random wrong target label.")
_LOSS = flags.DEFINE_enum("loss", None, ["ce", "cw"],
                          "Attack loss: cross-entropy or C&W margin.")
_BPDA = flags.DEFINE_bool(
    "bpda", False, "Craft on the straight-through (BPDA) copy of the model "
    "(Athalye et al. 2018). Automatic for models with a non-differentiable "
    "defense layer; this flag forces it for any model.")
_EOT = flags.DEFINE_integer(
    "eot_samples", 20, lower_bound=1, help= "Draws averaged by EOT, in the attack's gradients and "
    "in the prediction, for models with a randomized defense layer.")
_NAIVE = flags.DEFINE_bool(
    "naive", False, "Attack a defended model as it is (no BPDA / EOT): a "
    "gradient-masked DEMONSTRATION, labelled as such in the report, never a "
    "robustness number.")
_NUM = flags.DEFINE_integer("num_examples", None, "First N test images.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of random starts/targets.")
_OUTPUT = flags.DEFINE_string("output", None, "Report path (JSON).")
_SUITE = flags.DEFINE_enum(
    "suite", None, ["caad_targeted", "caad_blackbox", "autoattack_like",
                    "seed_lectures"],
    "Run a named attacker suite of attacks/suites.py instead of one attack "
    "(resumable: rerun the same command after an interruption).")
_TRANSFER_FROM = flags.DEFINE_list(
    "transfer_from", [], "Surrogate .keras models: the caad_blackbox "
    "suite's crafting models.")
_SANITY = flags.DEFINE_integer(
    "sanity_examples", 200, lower_bound=0, help= "Gradient-masking sanity checks (accuracy vs "
    "eps and vs iterations, with PNG plots; white-box vs FGSM and Square; "
    "input gradients) on the first N test images; 0 skips them.")
_TRANSFER_MATRIX = flags.DEFINE_bool(
    "transfer_matrix", False, "Also write the transfer matrix (rows: "
    "source, columns: target, cells: error rate) of this model and "
    "--transfer_from under the attack, on --sanity_examples images.")
_DESTRUCTION = flags.DEFINE_bool(
    "destruction", False, "Also write the destruction rates (Kurakin et "
    "al. 2017) of JPEG, blur, noise, brightness/contrast and resize on the "
    "attack's adversarial examples of the first --sanity_examples images.")
_CAAD_INPUT = flags.DEFINE_string(
    "caad_input_dir", None, "CAAD submission mode: classify the PNGs of "
    "this directory and write --caad_output (filename,label lines).")
_CAAD_OUTPUT = flags.DEFINE_string("caad_output", None,
                                   "CSV written by --caad_input_dir.")
_LABEL_OFFSET = flags.DEFINE_integer(
    "label_offset", 0, lower_bound=0, help= "Added to predicted labels in CAAD mode (1 for the "
    "1001-class Inception indexing).")


def _settings() -> tuple[dict, pathlib.Path | str, pathlib.Path]:
    """(recipe config as a dict or {}, model path or checkpoint name,
    report directory)."""
    given = [f for f in (_WORKDIR, _MODEL, _CHECKPOINT) if f.value]
    if len(given) != 1:
        raise UserError("give exactly one of --workdir, --model or "
                             "--checkpoint")
    if _CHECKPOINT.value:
        return (_checkpoint_config(_CHECKPOINT.value), _CHECKPOINT.value,
                pathlib.Path("reports") / pathlib.Path(
                    _CHECKPOINT.value.replace(":", "_")).name)
    if _MODEL.value:
        if _system_dir(_MODEL.value):
            path = pathlib.Path(_MODEL.value)
            return _read_config(path.parent / "config.json"), path, \
                path.parent / "reports"
        path = paths.check_input_file(_MODEL.value, "--model", (".keras",))
    else:
        workdir = paths.check_input_dir(_WORKDIR.value, "--workdir")
        if _system_dir(workdir / "system"):
            return _read_config(workdir / "config.json"), \
                workdir / "system", workdir / "reports"
        path = workdir / "model.keras"
        if not path.exists():
            raise UserError(f"--workdir={workdir} holds no model.keras (a "
                            "run still training, or not a train.py "
                            "workdir); train one with train.py")
    return _read_config(path.parent / "config.json"), path, \
        path.parent / "reports"


def _system_dir(path) -> bool:
    """Whether `path` is a detection system saved by train.py's defense
    stage (a directory with system.json)."""
    return (pathlib.Path(path) / "system.json").is_file()


def _read_config(path: pathlib.Path) -> dict:
    """The recipe config train.py wrote beside a model ({} if none).

    Raises:
        UserError: the file is not a JSON object.
    """
    if not path.exists():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); it should be the "
                        "config.json that train.py wrote: restore it or "
                        "move it away (then give --dataset and the attack "
                        "flags)") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path} holds a {type(cfg).__name__}, not the "
                        "recipe config (a JSON object) that train.py writes")
    return cfg


def _check_flags(report_dir: pathlib.Path) -> None:
    """Checks the numeric flags against the ranges of the recipe fields
    they stand for, and every output path, before any work.

    Raises:
        UserError: the first bad flag or path.
    """
    checks = (("--num_examples", _NUM.value, "eval.num_examples"),
              ("--batch_size", _BATCH.value, "eval.batch_size"),
              ("--image_size", _IMAGE_SIZE.value, "data.image_size"),
              ("--seed", _SEED.value, "train.seed"))
    for label, value, field in checks:
        if value is not None:
            try:
                ranges.check_value(label, value, ranges.FIELDS[field])
            except ValueError as e:
                raise UserError(str(e)) from None
    if _IMAGE_SIZE.value is not None and not _CHECKPOINT.value:
        raise UserError(f"--image_size={_IMAGE_SIZE.value} applies to "
                        "--checkpoint only; a .keras model keeps the input "
                        "size it was trained at")
    if _OUTPUT.value:
        out = pathlib.Path(_OUTPUT.value)
        if out.exists():
            raise UserError(f"--output={out} exists; a report is never "
                            "overwritten: choose another name")
        paths.check_output_dir(out.parent, "--output's directory")
    else:
        paths.check_output_dir(report_dir, "the report directory")
    for p in _TRANSFER_FROM.value:
        paths.check_input_file(p, "--transfer_from", (".keras",))
    if _CAAD_INPUT.value:
        paths.check_input_dir(_CAAD_INPUT.value, "--caad_input_dir")
        if not _CAAD_OUTPUT.value:
            raise UserError("--caad_input_dir needs --caad_output=FILE.csv")
        out = pathlib.Path(_CAAD_OUTPUT.value)
        if out.exists():
            raise UserError(f"--caad_output={out} exists; it is never "
                            "overwritten: choose another name")
        paths.check_output_dir(out.parent, "--caad_output's directory")


def _checkpoint_config(name: str) -> dict:
    """A recipe-like config of a registered checkpoint: its dataset and
    input size, and its published threat model as the eval attack (PGD-10
    with Xie et al.'s step max(1/255, eps/steps)); {} for other forms."""
    import checkpoints

    if name not in checkpoints.list_checkpoints():
        return {}
    spec = checkpoints.get(name)
    t = spec.threat_model
    return {"data": {"name": spec.dataset, "image_size": spec.input_size,
                     "channels": 3},
            "eval": {"attack": {
                "name": "pgd", "norm": t.norm, "eps": t.eps,
                "step_size": max(1 / 255, t.eps / 10), "steps": 10,
                "rand_init": True, "targeted": t.targeted}}}


def _attack_config(cfg: dict) -> dict:
    attack = dict(cfg.get("eval", {}).get("attack") or
                  {"name": "pgd", "norm": "inf", "rand_init": True})
    if _ATTACK.value and _ATTACK.value != attack["name"]:
        # Another attack keeps only the recipe's budget; its own settings
        # come from flags (e.g. FGSM takes no steps or step size).
        attack = {"name": _ATTACK.value, "eps": attack["eps"]}
        if not _needs_eps(_ATTACK.value):
            # Minimum-norm attacks (C&W, DeepFool, L-BFGS ...) have no ball;
            # eps there would project onto an L2 ball, so only --eps sets it.
            del attack["eps"]
    overrides = {"name": _ATTACK.value, "eps": _EPS.value,
                 "step_size": _STEP_SIZE.value, "steps": _single_steps(),
                 "norm": _NORM.value, "restarts": _RESTARTS.value,
                 "targeted": _TARGETED.value, "loss": _LOSS.value}
    attack.update({k: v for k, v in overrides.items() if v is not None})
    from_flags = {k for k, v in overrides.items() if v is not None}
    try:
        ranges.check_attack(attack, lambda k: f"--{k}" if k in from_flags
                            else f"eval.attack.{k} (of config.json)")
    except ValueError as e:
        raise UserError(str(e)) from None
    missing = [k for k in ("eps", "step_size", "steps") if k not in attack]
    if missing and attack["name"] in ("pgd", "bim"):
        raise UserError(f"set {missing} with flags (no recipe config)")
    missing = [k for k in _required_args(attack["name"]) if k not in attack]
    if missing:
        raise UserError(
            f"attack {attack['name']!r} needs {missing}; set them with "
            + ", ".join(f"--{k}" for k in missing))
    attack["seed"] = _SEED.value
    _check_attack(attack)
    if _BPDA.value:
        attack["bpda"] = True
    return attack


def _check_attack(attack: dict) -> None:
    """Checks the merged attack against the attack's own signature.

    Raises:
        UserError: an unknown attack or a key the attack does not take.
    """
    import attacks

    try:
        attacks.from_config(attack)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(str(e.args[0] if e.args else e)) from None


def _steps_list() -> list[int] | None:
    if _STEPS.value is None:
        return None
    try:
        steps = [int(v) for v in _STEPS.value]
    except ValueError:
        raise UserError(f"--steps must be integers; got {_STEPS.value}")
    if not steps or min(steps) < 1:
        raise UserError(f"--steps must be >= 1; got {_STEPS.value}")
    return steps


def _single_steps() -> int | None:
    steps = _steps_list()
    if steps is not None and len(steps) != 1:
        raise UserError(f"one attack takes one --steps value; got "
                             f"{_STEPS.value} (lists are for --suite)")
    return None if steps is None else steps[0]


def _needs_eps(name: str) -> bool:
    """Whether attack `name` is a fixed-budget one (a required `eps`)."""
    import inspect

    import attacks

    try:
        param = inspect.signature(attacks.get_attack(name)).parameters.get(
            "eps")
    except KeyError as e:
        raise UserError(e.args[0])
    return param is not None and param.default is inspect.Parameter.empty


def _required_args(name: str) -> list[str]:
    """The keyword arguments without a default of attack `name` (e.g. the
    step size and steps of "trades_kl")."""
    import inspect

    import attacks

    params = inspect.signature(attacks.get_attack(name)).parameters
    return [k for k, p in params.items() if p.kind == p.KEYWORD_ONLY
            and p.default is inspect.Parameter.empty]


def _report_path(report_dir: pathlib.Path, label: str) -> pathlib.Path:
    if _OUTPUT.value:
        path = pathlib.Path(_OUTPUT.value)
        if path.exists():
            raise UserError(f"{path} exists; it is never overwritten")
        return path
    report_dir.mkdir(parents=True, exist_ok=True)
    path, i = report_dir / f"{label}.json", 1
    while path.exists():
        path, i = report_dir / f"{label}_{i}.json", i + 1
    return path


def main(argv):
    del argv
    cfg, model_path, report_dir = _settings()
    _check_flags(report_dir)
    if _system_dir(model_path):
        return _detection(model_path, report_dir)
    suite = _suite_spec() if _SUITE.value else None
    if suite is None and not _CAAD_INPUT.value:
        _attack_config(cfg)  # checks the threat model before any work
    try:
        strategy = distribute.get_strategy(_STRATEGY.value, tpu=_TPU.value)
    except ValueError as e:
        raise UserError(f"--strategy={_STRATEGY.value}: {e}") from None

    # ----------------------------------------------------- model and data
    model = _model_to_evaluate(cfg, model_path, strategy)
    if _CAAD_INPUT.value:
        return _caad_submission(model)
    ds, info, dataset_name, num, batch = _dataset(cfg, model, suite)

    # ------------------------------------------------------------ measure
    warnings = _model_warnings(model, ds)
    if suite is not None:
        return _suite(suite, model, model_path, ds, info, dataset_name, num,
                      report_dir)
    _single_attack(cfg, model, model_path, ds, info, dataset_name, num,
                   batch, strategy, report_dir, warnings)


def _model_to_evaluate(cfg, model_path, strategy):
    """The model of --checkpoint (adapting cfg's data section to its input)
    or of the checked .keras file; a saved trainer gives its network.

    Raises:
        UserError: a bad checkpoint or model file (checkpoints.load /
            load_model_file name the file and what is wrong).
    """
    import checkpoints  # its loaders register the custom layers themselves

    with strategy.scope():
        if not _CHECKPOINT.value:
            return checkpoints.load_model_file(model_path)
        size = _IMAGE_SIZE.value or cfg.get("data", {}).get("image_size")
        try:
            model = checkpoints.load(
                _CHECKPOINT.value, trust_sha256=_TRUST.value,
                input_shape=(size, size, 3) if size else None)
        except (KeyError, ValueError) as e:
            raise UserError(str(e.args[0] if e.args else e)) from None
    # the data follows the model's input (e.g. Fashion-MNIST resized to the
    # checkpoint's size, as 3 channels)
    height, _, channels = model.input_shape[1:]
    cfg.setdefault("data", {}).update(image_size=height, channels=channels)
    return model


def _dataset(cfg, model, suite):
    """(test dataset, info, name, num_examples, batch size), checked
    against the model's classes and input shape.

    Raises:
        UserError: unknown dataset, missing files, or a model that does not
            fit the data.
    """
    import data

    data_cfg = cfg.get("data", {})
    dataset_name = _DATASET.value or data_cfg.get("name")
    if not dataset_name:
        raise UserError("--dataset is required without a recipe config "
                        f"(one of {data.list_datasets()})")
    try:
        info = data.get_info(dataset_name)
    except ValueError as e:
        raise UserError(f"--dataset: {e}") from None
    if model.output_shape[-1] != info.num_classes:
        raise UserError(
            f"the model has {model.output_shape[-1]} logits but "
            f"{dataset_name} has {info.num_classes} classes; evaluate it on "
            "its own dataset, or fine-tune it first (train.py "
            "--init_checkpoint)")
    batch = _BATCH.value or cfg.get("eval", {}).get("batch_size") or 500
    num = (_NUM.value or (suite and suite.default_num_examples)
           or cfg.get("eval", {}).get("num_examples"))
    try:
        ds = data.get_backend_dataset(
            dataset_name, "test", batch_size=batch, num_examples=num,
            data_dir=data_cfg.get("data_dir"),
            image_size=data_cfg.get("image_size"),
            channels=data_cfg.get("channels"))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"dataset {dataset_name}: {e}") from None
    want = tuple(model.input_shape[1:])
    got = tuple(ds.element_spec[0].shape[1:])
    if len(want) != len(got) or any(w not in (None, g)
                                    for w, g in zip(want, got)):
        raise UserError(
            f"the model takes inputs of shape {want} (H, W, C) but "
            f"{dataset_name} gives {got}; set --image_size or the recipe's "
            "data.image_size / data.channels to the model's, or evaluate "
            "it on its own dataset")
    return ds, info, dataset_name, num, batch


def _model_warnings(model, ds) -> list[str]:
    """Loud warnings about a model no number should be trusted for: one
    that predicts a single class for a whole batch of test images."""
    import numpy as np

    x, _ = next(iter(ds.as_numpy_iterator()))
    preds = np.argmax(np.asarray(model.predict(x, verbose=0)), axis=-1)
    if len(preds) < 10 or len(set(preds.tolist())) > 1:
        return []
    warning = (f"the model predicts class {int(preds[0])} for all "
               f"{len(preds)} images of the first batch: a degenerate model "
               "(diverged or untrained); its accuracy numbers mean nothing")
    print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    return [warning]


def _caad_submission(model) -> None:
    """CAAD / NIPS'17 defense mode: PNG directory in, `filename,label` out."""
    from evaluation.caad_submission import predict_directory

    if not _CAAD_OUTPUT.value:
        raise UserError("--caad_input_dir needs --caad_output=FILE.csv")
    n = predict_directory(model, _CAAD_INPUT.value, _CAAD_OUTPUT.value,
                          batch_size=_BATCH.value or 100,
                          label_offset=_LABEL_OFFSET.value)
    print(f"wrote {n} predictions to {_CAAD_OUTPUT.value}")


def _suite_spec():
    """The --suite at the --eps / --steps of the flags."""
    from attacks.suites import get_suite

    steps = _steps_list()
    if steps is not None and _SUITE.value != "caad_targeted":
        steps = _single_steps()
    try:
        return get_suite(_SUITE.value, eps=_EPS.value, steps=steps,
                         surrogates=len(_TRANSFER_FROM.value))
    except ValueError as e:
        raise UserError(str(e))


def _suite(suite, model, model_path, ds, info, dataset_name, num,
           report_dir):
    """Runs `suite`, appending per-batch results to a log that a rerun of
    the same command continues; writes a JSON report and a Markdown
    summary."""
    import checkpoints

    from evaluation.suite_runner import run_suite, to_markdown

    surrogates = [checkpoints.load_model_file(p) for p in _TRANSFER_FROM.value]
    label = f"suite_{suite.name}_eps{suite.eps:.4f}"
    report_dir.mkdir(parents=True, exist_ok=True)
    log = report_dir / f"{label}.partial.jsonl"
    identity = {"model": str(model_path), "dataset": dataset_name,
                "num_examples": num, "surrogates": _TRANSFER_FROM.value}
    if log.exists():
        print(f"resuming from {log}")
    start = time.time()
    result = run_suite(model, ds.as_numpy_iterator(), suite,
                       num_classes=info.num_classes, surrogates=surrogates,
                       seed=_SEED.value, log_path=log, identity=identity)
    report = {**identity, "split": "test", **result,
              "seconds": round(time.time() - start, 1)}
    path = _report_path(report_dir, label)
    atomic_write.write_text(path, json.dumps(report, indent=2),
                            exclusive=True)
    log.rename(path.with_suffix(".jsonl"))
    summary = to_markdown(result)
    atomic_write.write_text(path.with_suffix(".md"), summary, exclusive=True)
    print("\n" + summary + f"\nreport: {path}")


def _single_attack(cfg, model, model_path, ds, info, dataset_name, num,
                   batch, strategy, report_dir, warnings=()):
    """One attack (the recipe's eval attack, flags override) over the test
    split, under `strategy`."""
    import attacks
    from evaluation import attack_label, robust_accuracy

    attack = _attack_config(cfg)
    targeted = bool(attack.get("targeted"))
    total = num or info.num_test
    # Athalye et al. 2018: a non-differentiable defense layer is attacked
    # through BPDA, a randomized one through EOT with the expected
    # prediction; --naive skips both and labels the number a demonstration.
    with strategy.scope():
        adaptive = attacks.adaptive_model(model, eot_samples=_EOT.value,
                                          naive=_NAIVE.value)
    described = adaptive.description
    attacks.require_adaptive(model, described)
    if described["bpda"]:
        attack["bpda"] = True
    if described["eot_samples"]:
        attack["eot_samples"] = described["eot_samples"]
    if described["naive"]:
        attack["naive"] = True
    base_fn = attacks.from_config({k: v for k, v in attack.items()
                                   if k not in ("bpda", "eot_samples",
                                                "naive")})

    def attack_fn(_, x, y, **kwargs):  # crafts on the adaptive model
        return base_fn(adaptive.attack_model, x, y, **kwargs)
    start = time.time()
    result = robust_accuracy(
        adaptive.predict, ds, attack_fn, num_classes=info.num_classes,
        targeted=targeted, strategy=strategy, seed=_SEED.value,
        steps=-(-total // batch), eager=attack["name"] in attacks.EAGER_ONLY)
    label = attack_label(attack)
    report = {"model": str(model_path), "dataset": dataset_name,
              "split": "test", "attack": attack, **result,
              "threat_model": described,
              "seconds": round(time.time() - start, 1),
              "strategy": _STRATEGY.value}
    path = _report_path(report_dir, label)
    markdown = [f"## {label} on `{model_path}`", ""]
    warnings = _attack_warnings(attack, result, warnings)
    if warnings:
        report["warnings"] = warnings
        markdown += [f"**WARNING: {w}**" for w in warnings] + [""]
    if described["naive"]:
        markdown += [f"**{NAIVE_WARNING}**", ""]
        print(f"WARNING: {NAIVE_WARNING}")
    markdown += ["| examples | clean acc | robust acc | max L-inf |",
                 "|---|---|---|---|",
                 f"| {result['n']} | {result['clean_acc']:.4f} | "
                 f"{result['robust_acc']:.4f} | {result['max_linf']:.4f} |"]
    if _SANITY.value:
        report["sanity"] = _sanity_checks(
            model, adaptive, ds, {k: v for k, v in attack.items()
                                  if k not in ("eot_samples", "naive")},
            path, markdown)
    if _TRANSFER_MATRIX.value:
        report["transfer_matrix"] = _transfer_matrix(model, ds, attack,
                                                     markdown)
    if _DESTRUCTION.value:
        report["destruction"] = _destruction(model, ds, attack_fn, markdown)
    atomic_write.write_text(path, json.dumps(report, indent=2),
                            exclusive=True)
    atomic_write.write_text(path.with_suffix(".md"),
                            "\n".join(markdown) + "\n", exclusive=True)
    rows = [("examples", f"{result['n']}"),
            ("clean_acc", f"{result['clean_acc']:.4f}"),
            (f"robust_acc ({label})", f"{result['robust_acc']:.4f}")]
    if targeted:
        rows.append(("attack_success_rate",
                     f"{result['attack_success_rate']:.4f}"))
    rows.append(("max |x_adv - x|_inf", f"{result['max_linf']:.4f}"))
    width = max(len(r[0]) for r in rows)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    print(f"report: {path} (summary: {path.with_suffix('.md').name})")


def _attack_warnings(attack, result, warnings) -> list[str]:
    """`warnings` plus one, printed, for an attack that moved no pixel."""
    warnings = list(warnings)
    if attack.get("eps") and result["n"] and result["max_linf"] == 0:
        warnings.append("the attack moved no pixel (max L-inf 0 at eps "
                        f"{attack['eps']}): zero or non-finite gradients, so "
                        "the robust accuracy is not a robustness number")
        print(f"WARNING: {warnings[-1]}", file=sys.stderr, flush=True)
    return warnings


NAIVE_WARNING = ("naive: the defended model attacked as it is, without "
                 "BPDA/EOT - a gradient-masked demonstration, not a "
                 "robustness number")


def _sanity_checks(model, adaptive, ds, attack, path, markdown) -> dict:
    """Gradient-masking checks on the first --sanity_examples images; on a
    randomized model through EOT, with Square querying the exact
    expectation where `attacks.exact_eot` has one."""
    import attacks
    from evaluation.report_sections import first_examples, sanity_section

    x, y = first_examples(ds, _SANITY.value)
    randomized = bool(adaptive.description["eot_samples"])
    exact = None
    if randomized:
        try:
            exact = attacks.exact_eot(model)
        except ValueError:  # not a single RandomResizePad, or too many
            pass
    return sanity_section(adaptive.attack_model if randomized else model,
                          x, y, attack, path, markdown,
                          randomized=randomized, exact_model=exact)


def _destruction(model, ds, attack_fn, markdown) -> list[dict]:
    """Destruction rates on the first --sanity_examples (or 200) images."""
    from evaluation.report_sections import (destruction_section,
                                            first_examples)

    x, y = first_examples(ds, _SANITY.value or 200)
    return destruction_section(model, x, y, attack_fn, markdown)


def _transfer_matrix(model, ds, attack, markdown) -> dict:
    """This model and the --transfer_from ones, on the first
    --sanity_examples (or 200) images."""
    from evaluation.report_sections import first_examples, transfer_section

    if not _TRANSFER_FROM.value:
        raise UserError("--transfer_matrix needs --transfer_from")
    x, y = first_examples(ds, _SANITY.value or 200)
    return transfer_section(model, _TRANSFER_FROM.value, x, y, attack,
                            markdown)


def _detection(system_dir: pathlib.Path, report_dir: pathlib.Path) -> None:
    """Detection mode (evaluation.detection_report): the system's naive
    and adaptive attacks on the first --num_examples (<= 5000) test images.

    Raises:
        UserError: a bad system directory, --num_examples above 5000 (the
            calibration images start there), or an existing report.
    """
    from evaluation import detection_report
    from models.detection import load_system
    from training.defense_stage import CALIBRATION_START, fmnist_arrays

    num = _NUM.value or 1000
    if num > CALIBRATION_START:
        raise UserError(f"--num_examples={num} is not accepted for a "
                        f"detection system; expected <= {CALIBRATION_START} "
                        "(its thresholds were set on the test images from "
                        f"index {CALIBRATION_START})")
    system = load_system(system_dir)
    specs = dict(system.config.get("attacks", {}))
    steps = _single_steps()
    for role, spec in specs.items():
        spec = dict(spec)
        if steps is not None and "steps" in spec:
            spec["steps"] = steps
        if _RESTARTS.value is not None and role == "adaptive":
            spec["restarts"] = _RESTARTS.value
        specs[role] = spec
    x, y = fmnist_arrays("test", 0, num)
    out = pathlib.Path(_OUTPUT.value) if _OUTPUT.value else None
    folder = out.parent if out else report_dir
    folder.mkdir(parents=True, exist_ok=True)
    label = out.stem if out else f"detection_{system.kind}_n{num}"
    try:
        report = detection_report.evaluate_system(
            system, x, y, folder, attack_specs=specs, seed=_SEED.value,
            batch_size=_BATCH.value or 100, label=label)
    except FileExistsError as e:
        raise UserError(str(e)) from None
    print(detection_report.markdown(report))
    print(f"report: {folder / label}.json")


if __name__ == "__main__":
    cli.run(main)
