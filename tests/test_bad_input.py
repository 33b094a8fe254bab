"""Bad input to train.py and evaluate.py: one clear line, nothing lost.

Every case runs the CLI as a user would (a subprocess) and asserts:
- a non-zero exit;
- exactly one `error:` line on stderr, naming the bad value;
- no traceback and no other line naming an exception class;
- the workdir (and any other directory the case hands over) unchanged,
  file by file (a workdir that did not exist still does not).

The cases cover both CLIs' flags, the recipe overrides, the attacks'
keyword arguments (as flags and as recipe fields) and the checkpoint
loader (registered names, files, trust, no network). They run two at a
time (the machine has 2 cores); most fail in well under a second because
the checks come before Keras is imported.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "--recipe=pgd_at_cnn_fmnist:smoke"
ATTACK = ("--eps=0.1", "--step_size=0.01", "--steps=2")
# A registered checkpoint (no download ever happens in these tests).
REGISTERED = "resnet152.xie2019_in1k"
UNREACHABLE_PROXY = "http://127.0.0.1:9"  # the discard port: refused


@dataclasses.dataclass
class Case:
    """One bad input. `args` may hold `{W}` (the case's workdir), `{D}`
    (its scratch dir) and `{T}` (a trained workdir's copy, which is then
    the case's workdir); `setup(case_dir)` prepares files; `names` is the
    text the error line must contain."""
    id: str
    cli: str
    args: tuple
    names: str
    env: dict = dataclasses.field(default_factory=dict)
    setup: object = None


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _empty_model(d):
    _write(d / "w" / "model.keras", b"")


def _truncated_model(d):
    src = (d / "w" / "model.keras").read_bytes()
    (d / "w" / "model.keras").write_bytes(src[:len(src) // 2])


def _text_model(d):
    (d / "w" / "model.keras").write_text("not a model\n")


def _garbage_config(d):
    (d / "w" / "config.json").write_text("{garbage")


def _list_config(d):
    (d / "w" / "config.json").write_text("[1, 2]")


def _nan_model(d):
    _run_python(f"""
import keras, numpy as np, layers, models
m = keras.saving.load_model({str(d / 'w' / 'model.keras')!r})
w = m.get_weights(); w[0] = np.full_like(w[0], np.nan); m.set_weights(w)
import os; os.remove({str(d / 'w' / 'model.keras')!r})
m.save({str(d / 'w' / 'model.keras')!r})
""")


def _rgb32_model(d):
    _run_python(f"""
import keras
m = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                      keras.layers.Dense(10)])
m.save({str(d / 'rgb32.keras')!r})
""")


def _no_model(d):
    (d / "w" / "model.keras").unlink()


def _finished(d):
    _write(d / "w" / "model.keras", b"PK")


def _other_config(d):
    _write(d / "w" / "config.json", b'{"other": 1}')


def _keras_home(d):
    """A KERAS_HOME with Keras's own keras.json (which Keras writes on
    import when it is missing)."""
    _write(d / "home" / "keras.json", b'{"backend": "tensorflow", '
           b'"floatx": "float32", "epsilon": 1e-07, '
           b'"image_data_format": "channels_last"}')


def _cached_untrusted(d):
    _keras_home(d)
    _write(d / "home" / "robust_recipes" / "R152.npz", b"unverified bytes")


def _existing_report(d):
    _write(d / "report.json", b"{}")


def _afile(d):
    _write(d / "afile", b"x")


def _caad_dir(d):
    (d / "pngs").mkdir(parents=True, exist_ok=True)


def _run_python(code):
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   env=_env(), capture_output=True, timeout=300)


def _env(extra=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": "", **(extra or {})}
    env.pop("KERAS_BACKEND", None)  # the CLIs' default: TensorFlow
    return env


def _train(i, *args, names, **kw):
    return Case(f"train-{i}", "train.py", (SMOKE, "--workdir={W}", *args),
                names, **kw)


def _ev(i, *args, names, **kw):
    return Case(f"evaluate-{i}", "evaluate.py", args, names, **kw)


CASES = [
    # ------------------------------------------------ train.py: the recipe
    _train("epochs-negative", "--recipe.train.epochs=-1",
           names="train.epochs=-1"),
    _train("epochs-zero", "--recipe.train.epochs=0", names="train.epochs=0"),
    _train("epochs-not-int", "--recipe.train.epochs=abc", names="abc"),
    _train("steps-per-epoch-zero", "--recipe.train.steps_per_epoch=0",
           names="steps_per_epoch=0"),
    _train("unknown-field", "--recipe.train.nosuch=1", names="nosuch"),
    _train("unknown-section", "--recipe.nosuch.x=1", names="nosuch"),
    Case("train-recipe-arg", "train.py",
         ("--recipe=pgd_at_cnn_fmnist:foo", "--workdir={W}"), "foo"),
    Case("train-recipe-name", "train.py",
         ("--recipe=no_such_recipe", "--workdir={W}"), "no_such_recipe"),
    Case("train-no-workdir", "train.py", (SMOKE,), "--workdir"),
    _train("strategy", "--strategy=bogus", names="bogus"),
    _train("lr-zero", "--recipe.optimizer.learning_rate=0",
           names="learning_rate=0"),
    _train("lr-negative", "--recipe.optimizer.learning_rate=-0.1",
           names="learning_rate=-0.1"),
    _train("lr-nan", "--recipe.optimizer.learning_rate=nan",
           names="learning_rate=nan"),
    _train("lr-inf", "--recipe.optimizer.learning_rate=inf",
           names="learning_rate=inf"),
    _train("batch-zero", "--recipe.data.global_batch_size=0",
           names="global_batch_size=0"),
    _train("batch-negative", "--recipe.data.global_batch_size=-5",
           names="global_batch_size=-5"),
    _train("batch-over-data", "--recipe.data.global_batch_size=1000",
           names="global_batch_size=1000"),
    _train("num-train-zero", "--recipe.data.num_train_examples=0",
           names="num_train_examples=0"),
    _train("channels", "--recipe.data.channels=2", names="channels=2"),
    _train("image-size", "--recipe.data.image_size=3", names="image_size=3"),
    _train("data-dir", "--recipe.data.data_dir=/nonexistent",
           names="/nonexistent"),
    _train("fashion-mnist-dir", names="/nonexistent",
           env={"FASHION_MNIST_DIR": "/nonexistent"}),
    _train("dataset-name", "--recipe.data.name=svhn", names="svhn"),
    _train("model-name", "--recipe.model.name=resnet9000",
           names="resnet9000"),
    _train("method", "--recipe.train.method=magic", names="magic"),
    _train("optimizer", "--recipe.optimizer.name=rmsprop", names="rmsprop"),
    _train("momentum", "--recipe.optimizer.momentum=1.5",
           names="momentum=1.5"),
    _train("weight-decay", "--recipe.optimizer.weight_decay=-1",
           names="weight_decay=-1"),
    _train("schedule", "--recipe.schedule.name=linear", names="linear"),
    _train("decay-factor", "--recipe.schedule.decay_factor=0",
           names="decay_factor=0"),
    _train("warmup-without-schedule", "--recipe.schedule.name=constant",
           "--recipe.schedule.warmup_epochs=1", names="warmup_epochs=1"),
    _train("lr-boundaries", "--recipe.schedule.boundaries_epochs=(3, 1)",
           names="(3, 1)"),
    _train("alpha", "--recipe.train.alpha=2", names="alpha=2"),
    _train("label-smoothing", "--recipe.train.label_smoothing=1",
           names="label_smoothing=1"),
    _train("seed", "--recipe.train.seed=-1", names="seed=-1"),
    _train("backup-every", "--recipe.train.backup_every_steps=0",
           names="backup_every_steps=0"),
    _train("max-loss", "--recipe.train.max_loss=0", names="max_loss=0"),
    _train("eval-batch", "--recipe.eval.batch_size=0",
           names="batch_size=0"),
    _train("bool-field", "--recipe.runtime.jit_compile=maybe",
           names="maybe"),
    # ---------------------------- train.py: the attack's keyword arguments
    _train("attack-eps-pixel-scale", "--recipe.attack.eps=5",
           names="attack.eps=5"),
    _train("attack-eps-negative", "--recipe.attack.eps=-0.1",
           names="attack.eps=-0.1"),
    _train("attack-steps", "--recipe.attack.steps=0",
           names="attack.steps=0"),
    _train("attack-step-size", "--recipe.attack.step_size=0",
           names="attack.step_size=0"),
    _train("attack-norm", "--recipe.attack.norm=3", names="'3'"),
    _train("attack-restarts", "--recipe.attack.restarts=0",
           names="attack.restarts=0"),
    _train("attack-name", "--recipe.attack.name=nosuch", names="nosuch"),
    _train("eval-attack-step-size", "--recipe.eval.attack.step_size=-1",
           names="eval.attack.step_size=-1"),
    # ------------------------------------------- train.py: paths, reruns
    Case("train-workdir-file", "train.py", (SMOKE, "--workdir={D}/afile"),
         "afile", setup=_afile),
    Case("train-workdir-under-file", "train.py",
         (SMOKE, "--workdir={D}/afile/run"), "afile", setup=_afile),
    Case("train-workdir-read-only", "train.py",
         (SMOKE, "--workdir=/proc/robust_recipes_run"),
         "/proc/robust_recipes_run"),
    Case("train-finished-run", "train.py", (SMOKE, "--workdir={D}/w"),
         "finished", setup=_finished),
    Case("train-other-config", "train.py", (SMOKE, "--workdir={D}/w"),
         "different config", setup=_other_config),
    _train("freeze-without-init", "--freeze=stem", names="--freeze"),
    _train("init-unknown", "--init_checkpoint=no_such_ckpt",
           names="no_such_ckpt"),
    _train("init-missing-file", "--init_checkpoint=/nonexistent.keras",
           names="/nonexistent.keras"),
    _train("init-untrusted", f"--init_checkpoint={REGISTERED}",
           "--recipe.data.channels=3", names="--trust_sha256",
           env={"KERAS_HOME": "{D}/home"}, setup=_cached_untrusted),
    # --------------------------------------------- evaluate.py: the flags
    _ev("num-examples-zero", "--workdir={T}", "--num_examples=0",
        names="--num_examples=0"),
    _ev("num-examples-not-int", "--workdir={T}", "--num_examples=abc",
        names="abc"),
    _ev("batch-zero", "--workdir={T}", "--batch_size=0",
        names="--batch_size=0"),
    _ev("sanity-negative", "--workdir={T}", "--sanity_examples=-3",
        names="-3"),
    _ev("eot-zero", "--workdir={T}", "--eot_samples=0", names="0"),
    _ev("seed-negative", "--workdir={T}", "--seed=-1", names="--seed=-1"),
    _ev("label-offset", "--workdir={T}", "--label_offset=-1", names="-1"),
    _ev("image-size-with-model", "--workdir={T}", "--image_size=32",
        names="--image_size=32"),
    _ev("strategy", "--workdir={T}", "--strategy=bogus", names="bogus"),
    _ev("both-sources", "--workdir={T}", "--model={T}/model.keras",
        names="--workdir"),
    _ev("no-source", names="--workdir"),
    _ev("suite", "--workdir={T}", "--suite=nosuch", names="nosuch"),
    # ---------------------------- evaluate.py: the attack's keyword args
    _ev("eps-pixel-scale", "--workdir={T}", "--eps=5", names="--eps=5"),
    _ev("eps-negative", "--workdir={T}", "--eps=-1", names="--eps=-1"),
    _ev("eps-nan", "--workdir={T}", "--eps=nan", names="--eps=nan"),
    _ev("steps-zero", "--workdir={T}", "--steps=0", names="0"),
    _ev("steps-not-int", "--workdir={T}", "--steps=ten", names="ten"),
    _ev("steps-list", "--workdir={T}", "--steps=10,20", names="10"),
    _ev("step-size-zero", "--workdir={T}", "--step_size=0",
        names="--step_size=0"),
    _ev("restarts-zero", "--workdir={T}", "--restarts=0",
        names="--restarts=0"),
    _ev("norm", "--workdir={T}", "--norm=1", names="1"),
    _ev("loss", "--workdir={T}", "--loss=mse", names="mse"),
    _ev("attack-name", "--workdir={T}", "--attack=nosuch", names="nosuch"),
    _ev("attack-needs-args", "--workdir={T}", "--attack=trades_kl",
        names="trades_kl"),
    # ------------------------------------ evaluate.py: paths and files
    _ev("workdir-missing", "--workdir=/nonexistent_run",
        names="/nonexistent_run"),
    _ev("workdir-without-model", "--workdir={T}", *ATTACK,
        names="model.keras", setup=_no_model),
    _ev("model-suffix", "--model={T}/config.json", names="config.json"),
    _ev("model-empty", "--workdir={T}", names="model.keras",
        setup=_empty_model),
    _ev("model-truncated", "--workdir={T}", *ATTACK, names="model.keras",
        setup=_truncated_model),
    _ev("model-not-zip", "--workdir={T}", *ATTACK, names="model.keras",
        setup=_text_model),
    _ev("model-non-finite", "--workdir={T}", *ATTACK, names="non-finite",
        setup=_nan_model),
    _ev("model-input-shape", "--model={D}/rgb32.keras",
        "--dataset=fashion_mnist", *ATTACK, names="(32, 32, 3)",
        setup=_rgb32_model),
    _ev("config-garbage", "--workdir={T}", names="config.json",
        setup=_garbage_config),
    _ev("config-not-object", "--workdir={T}", names="config.json",
        setup=_list_config),
    _ev("dataset", "--workdir={T}", "--dataset=cifar11", names="cifar11"),
    _ev("fashion-mnist-dir", "--workdir={T}", names="/nonexistent",
        env={"FASHION_MNIST_DIR": "/nonexistent"}),
    _ev("output-exists", "--workdir={T}", "--output={D}/report.json",
        names="report.json", setup=_existing_report),
    _ev("output-read-only", "--workdir={T}", "--output=/proc/report.json",
        names="/proc"),
    _ev("transfer-from-missing", "--workdir={T}",
        "--transfer_from=/nonexistent.keras", names="/nonexistent.keras"),
    _ev("caad-input-missing", "--workdir={T}", "--caad_input_dir=/nonexist",
        "--caad_output={D}/out.csv", names="/nonexist"),
    _ev("caad-output-missing", "--workdir={T}", "--caad_input_dir={D}/pngs",
        names="--caad_output", setup=_caad_dir),
    # ------------------------------------ evaluate.py: checkpoint loader
    _ev("checkpoint-unknown", "--checkpoint=no_such_ckpt",
        "--dataset=fashion_mnist", *ATTACK, names="no_such_ckpt"),
    _ev("checkpoint-untrusted", f"--checkpoint={REGISTERED}",
        names="--trust_sha256", env={"KERAS_HOME": "{D}/home"},
        setup=_cached_untrusted),
    _ev("checkpoint-wrong-trust", f"--checkpoint={REGISTERED}",
        "--trust_sha256=" + "0" * 64, names="0" * 64,
        env={"KERAS_HOME": "{D}/home"}, setup=_cached_untrusted),
    _ev("checkpoint-bad-hash-format", f"--checkpoint={REGISTERED}",
        "--trust_sha256=xyz", names="xyz", env={"KERAS_HOME": "{D}/home"},
        setup=_cached_untrusted),
    _ev("checkpoint-no-network", f"--checkpoint={REGISTERED}",
        names="R152.npz", setup=_keras_home,
        env={"KERAS_HOME": "{D}/home", "https_proxy": UNREACHABLE_PROXY,
             "HTTPS_PROXY": UNREACHABLE_PROXY, "no_proxy": "",
             "NO_PROXY": ""}),
]
NEEDS_TRAINED = [c for c in CASES if any("{T}" in a for a in c.args)]


def _snapshot(path: pathlib.Path) -> dict | None:
    """{relative path: sha256} of every file under `path`, None if absent."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(
        p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
        if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke-trained workdir (copied for every case that uses it)."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", SMOKE, f"--workdir={workdir}"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _prepare(case: Case, base: pathlib.Path, trained: pathlib.Path):
    d = base / case.id
    d.mkdir(parents=True)
    if case in NEEDS_TRAINED:
        shutil.copytree(trained, d / "w")
    if case.setup:
        case.setup(d)
    fill = {"{W}": str(d / "w"), "{D}": str(d), "{T}": str(d / "w")}

    def sub(text):
        for k, v in fill.items():
            text = text.replace(k, v)
        return text
    args = [sub(a) for a in case.args]
    env = {k: sub(v) for k, v in case.env.items()}
    return d, args, env


def _run(case, d, args, env):
    before = _snapshot(d)
    proc = subprocess.run([sys.executable, case.cli, *args], cwd=ROOT,
                          env=_env(env), capture_output=True, text=True,
                          timeout=600)
    return proc, before, _snapshot(d)


@pytest.fixture(scope="module")
def results(tmp_path_factory, trained):
    base = tmp_path_factory.mktemp("cases")
    prepared = {c.id: _prepare(c, base, trained) for c in CASES}
    reports = ROOT / "reports"
    reports_before = _snapshot(reports)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {c.id: pool.submit(_run, c, *prepared[c.id])
                   for c in CASES}
        out = {k: f.result() for k, f in futures.items()}
    assert _snapshot(reports) == reports_before  # --checkpoint's report dir
    return out


def test_there_are_at_least_60_cases():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


_EXCEPTION = re.compile(r"\b[A-Z]\w*(Error|Exception)\b")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_gets_one_clear_line(case, results):
    proc, before, after = results[case.id]
    shown = f"rc={proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\n" \
            f"stderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode != 0, shown
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    errors = [ln for ln in proc.stderr.splitlines()
              if ln.startswith("error:")]
    assert len(errors) == 1, shown
    assert case.names in errors[0], shown
    others = [ln for ln in proc.stderr.splitlines()
              if ln not in errors and _EXCEPTION.search(ln)]
    assert not others, shown
    assert after == before, f"the case's files changed:\n{shown}"


def test_diverging_run_exits_non_zero_without_a_model(tmp_path):
    """lr 1e30 keeps the first losses finite (~1e29), so only the loss
    bound catches it: no model.keras, the workdir not marked finished."""
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", SMOKE, f"--workdir={workdir}",
         "--recipe.optimizer.learning_rate=1e30"], cwd=ROOT, env=_env(),
        capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines()
              if ln.startswith("error:")]
    assert len(errors) == 1 and "diverged" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (workdir / "model.keras").exists()
    assert not (workdir / "train_summary.json").exists()
    for ckpt in (workdir / "checkpoints").glob("*.keras"):
        import keras

        weights = keras.saving.load_model(ckpt).get_weights()
        assert all(np.isfinite(w).all() for w in weights)


# The attacks' keyword arguments, called as a library user calls them: each
# bad value is a ValueError of one line naming it, raised before any step.
ATTACK_KWARGS = [
    ("pgd", {"eps": -0.1, "step_size": 0.01, "steps": 2}, "-0.1"),
    ("pgd", {"eps": float("nan"), "step_size": 0.01, "steps": 2}, "nan"),
    ("pgd", {"eps": 0.1, "step_size": 0.0, "steps": 2}, "step_size"),
    ("pgd", {"eps": 0.1, "step_size": 0.01, "steps": 0}, "steps"),
    ("pgd", {"eps": 0.1, "step_size": 0.01, "steps": 2.5}, "2.5"),
    ("pgd", {"eps": 0.1, "step_size": 0.01, "steps": 2, "norm": "1"}, "'1'"),
    ("pgd", {"eps": 0.1, "step_size": 0.01, "steps": 2, "restarts": 0},
     "restarts"),
    ("pgd", {"eps": 0.1, "step_size": 0.01, "steps": 2, "loss": "mse"},
     "mse"),
    ("pgd", {"eps": 0.1, "step_size": 0.01, "steps": 2, "clip_min": 1.0,
             "clip_max": 0.0}, "clip_m"),
    ("fgsm", {"eps": -1.0}, "-1.0"),
    ("mi_fgsm", {"eps": 0.1, "steps": 0}, "steps"),
    ("apgd_ce", {"eps": 0.1, "steps": 0}, "steps"),
    ("cw_l2", {"steps": 0}, "steps"),
    ("deepfool", {"norm": "3"}, "'3'"),
    ("square", {"eps": 0.1, "steps": 0}, "steps"),
    ("spsa", {"eps": 0.1, "samples": 0}, "samples"),
]


@pytest.mark.parametrize("name,kwargs,names", ATTACK_KWARGS,
                         ids=[f"{a[0]}-{i}" for i, a in
                              enumerate(ATTACK_KWARGS)])
def test_attack_keyword_errors_are_one_line(name, kwargs, names):
    import keras

    import attacks

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    x = np.full((2, 4, 4, 1), 0.5, "float32")
    y = np.array([0, 1], "int32")
    with pytest.raises(ValueError) as info:
        attacks.get_attack(name)(model, x, y, **kwargs)
    message = str(info.value)
    assert "\n" not in message and names in message, message


def test_attack_input_outside_the_pixel_scale_is_one_line():
    import keras

    import attacks

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    x = np.full((2, 4, 4, 1), 255.0, "float32")
    with pytest.raises(ValueError, match="255") as info:
        attacks.pgd(model, x, np.array([0, 1]), eps=0.1, step_size=0.01,
                    steps=2)
    assert "\n" not in str(info.value)
