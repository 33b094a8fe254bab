r"""GPU benchmark of the PGD-k adversarial-training step: ours vs PyTorch.

Runs where JAX (and optionally PyTorch + torchvision) are installed but
TensorFlow is not (the lent GPU machine, /work/shared/specs/gpu_device.md):

    python benchmarks/gpu_at_step.py --output=/tmp/r152.json
    python benchmarks/gpu_at_step.py --preset=r152_denoise --torch=on
    python benchmarks/gpu_at_step.py --model=resnet50 --batch_size=256
    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/gpu_at_step.py \
        --model=madry_cnn --image_size=28 --channels=1 --num_classes=10 \
        --batch_size=16 --pgd_steps=2 --iters=2 --warmup=1 \
        --model_kwargs='{"width": 8}' --torch=off     # CPU smoke test

What is measured, per row, on one in-memory random batch kept on the device:
one full PGD-k adversarial-training step = k PGD steps (forward + backward
to the input with BatchNorm in inference mode, sign step, projection onto
the L-inf eps-ball, clip to [0, 1]) + one training step on the adversarial
batch (forward in training mode + backward to the weights + SGD with
momentum 0.9). Reported: ms per step (mean, median, min over --iters steps,
each timed alone with time.perf_counter and blocked on its result), img/s =
batch / mean step time, the seconds of the first call (trace + compile) and
of the whole warm-up, and the ratios of our img/s to PyTorch's.

- Ours: `models.create_model(--model, **--model_kwargs)` wrapped in
  `training.adversarial.AdversarialTrainer` with the attack config
  `{"name": "pgd", "eps", "step_size", "steps"}` (random start, the
  trainer's own PGD that also keeps each example's worst iterate and
  evaluates the last one), compiled by Keras 3 on JAX (`train_on_batch`,
  i.e. `make_train_function()`, one jitted step), once per precision in
  --precisions ("float32" and/or "mixed_bfloat16", via
  `keras.mixed_precision.set_global_policy`, a fresh model each).
- PyTorch (when `import torch, torchvision` works and --torch is not off):
  `torchvision.models.<name>(weights=None)` in eager mode doing the same
  step (same random start, best-iterate bookkeeping and final evaluation,
  ImageNet normalization in front), with bf16 autocast always and in
  float32 (TF32 allowed, like XLA's default) when "float32" is asked for.
  A model without a torchvision equivalent (our resnet152 with `denoise=`)
  is compared with the plain torchvision model and the JSON says so.

TensorFlow is never imported: an import hook refuses it (even where it is
installed), and repository modules that still import it at module level
(found by parsing the sources) are replaced by stubs that fail only when
used; the JSON lists the stubs that were actually imported.

References: PGD adversarial training, Madry et al. 2018 (arXiv 1706.06083);
R152-Denoise (--preset=r152_denoise: ResNet-152 with a Gaussian non-local
denoising block after each of the 4 stages, 71,341,608 parameters), Xie et
al. 2019, "Feature Denoising for Improving Adversarial Robustness" (arXiv
1812.03411), trained with PGD-30, eps 16/255, step 1/255.
"""

import ast
import importlib.abc
import importlib.util
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
# JAX and PyTorch share the GPU in one process: no 75% preallocation.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

_PACKAGES = ("attacks", "core", "evaluation", "layers", "models", "training")


def _tensorflow_modules(root=_ROOT, packages=_PACKAGES):
    """Dotted names of the repository modules with a top-level
    `import tensorflow` / `from tensorflow... import` statement."""
    found = set()
    for package in packages:
        for folder, _, files in os.walk(os.path.join(root, package)):
            for file in (f for f in files if f.endswith(".py")):
                path = os.path.join(folder, file)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                names = [a.name for n in tree.body if isinstance(n, ast.Import)
                         for a in n.names]
                names += [n.module for n in tree.body
                          if isinstance(n, ast.ImportFrom) and n.module
                          and n.level == 0]
                if any(n.split(".")[0] == "tensorflow" for n in names):
                    rel = os.path.relpath(path, root)[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    found.add(".".join(rel))
    return found


class _Unavailable:
    """What a stubbed module hands out: fails when called or instantiated."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            f"{type(self).__module__}.{type(self).__name__} needs TensorFlow, "
            "which benchmarks/gpu_at_step.py keeps out")


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        def getattr_(name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (_Unavailable,), {"__module__": module.__name__})

        module.__getattr__ = getattr_
        module.__all__ = []


class _KeepTensorFlowOut(importlib.abc.MetaPathFinder):
    """Refuses `tensorflow*`; serves stubs for `stub_names`, recording the
    ones imported in `used`."""

    def __init__(self, stub_names):
        self.stub_names, self.used = frozenset(stub_names), []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(
                f"No module named {name!r} (gpu_at_step.py keeps TensorFlow "
                "out)", name=name)
        if name in self.stub_names:
            self.used.append(name)
            return importlib.util.spec_from_loader(name, _StubLoader())
        return None


_GUARD = _KeepTensorFlowOut(_tensorflow_modules())
sys.meta_path.insert(0, _GUARD)

import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from fractions import Fraction  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import models  # noqa: E402
from training.adversarial import AdversarialTrainer  # noqa: E402
from training.losses import classification_loss  # noqa: E402

# Xie et al. 2019's R152-Denoise: a Gaussian non-local block with its 1x1
# embedding after each residual stage (models/resnet.py, defense_hooks.py).
PRESETS = {"r152_denoise": ("resnet152", {"denoise": {
    "kind": "gaussian", "embed": True, "where": "after_stage"}})}
PRECISIONS = ("float32", "mixed_bfloat16")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LEARNING_RATE = 0.01

_MODEL = flags.DEFINE_string("model", "resnet152", "Registered model name.")
_KWARGS = flags.DEFINE_string("model_kwargs", "{}",
                              "JSON options of create_model.")
_PRESET = flags.DEFINE_enum("preset", None, list(PRESETS),
                            "Sets --model and merges its model_kwargs "
                            "under --model_kwargs.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
_SIZE = flags.DEFINE_integer("image_size", 224, "Input height and width.")
_CHANNELS = flags.DEFINE_integer("channels", 3, "Input channels.")
_CLASSES = flags.DEFINE_integer("num_classes", 1000, "Number of classes.")
_STEPS = flags.DEFINE_integer("pgd_steps", 30, "PGD iterations k.",
                              lower_bound=1)
_EPS = flags.DEFINE_string("eps", "16/255", "L-inf radius (a/b allowed).")
_STEP = flags.DEFINE_string("step_size", "1/255", "PGD step (a/b allowed).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps (the first "
                               "compiles).", lower_bound=1)
_ITERS = flags.DEFINE_integer("iters", 8, "Timed steps.", lower_bound=1)
_PRECISIONS = flags.DEFINE_list("precisions", list(PRECISIONS),
                                f"Keras dtype policies, from {PRECISIONS}.")
_TORCH = flags.DEFINE_enum("torch", "auto", ["auto", "on", "off"],
                           "PyTorch reference: auto = when importable.")
_TORCH_MODEL = flags.DEFINE_string("torch_model", None, "torchvision model "
                                   "name to compare with (default: --model).")
_CHANNELS_LAST = flags.DEFINE_bool("torch_channels_last", True,
                                   "PyTorch in channels_last memory format.")
_TF32 = flags.DEFINE_bool("torch_tf32", True, "Allow TF32 in PyTorch's "
                          "float32 row (XLA's default on GPUs).")
_OUTPUT = flags.DEFINE_string("output", None, "Write the results as JSON.")


def _number(text: str) -> float:
    """'16/255' or '0.0627' -> float."""
    return float(Fraction(text.strip()))


def _config() -> dict:
    """The full run configuration from the flags (preset applied)."""
    model, kwargs = _MODEL.value, json.loads(_KWARGS.value)
    if not isinstance(kwargs, dict):
        raise app.UsageError("--model_kwargs must be a JSON object")
    if _PRESET.value:
        preset_model, preset_kwargs = PRESETS[_PRESET.value]
        if flags.FLAGS["model"].present and model != preset_model:
            raise app.UsageError(f"--preset={_PRESET.value} is a "
                                 f"{preset_model}; got --model={model}")
        model, kwargs = preset_model, {**preset_kwargs, **kwargs}
    bad = sorted(set(_PRECISIONS.value) - set(PRECISIONS))
    if bad:
        raise app.UsageError(f"--precisions must be from {PRECISIONS}; "
                             f"got {bad}")
    k = _STEPS.value
    return {
        "model": model, "model_kwargs": kwargs, "preset": _PRESET.value,
        "batch_size": _BATCH.value,
        "input_shape": [_SIZE.value, _SIZE.value, _CHANNELS.value],
        "num_classes": _CLASSES.value, "pgd_steps": k,
        "eps": _number(_EPS.value), "step_size": _number(_STEP.value),
        "eps_text": _EPS.value, "step_size_text": _STEP.value,
        "attack": {"name": "pgd", "eps": _number(_EPS.value),
                   "step_size": _number(_STEP.value), "steps": k},
        "optimizer": {"name": "SGD", "learning_rate": LEARNING_RATE,
                      "momentum": 0.9},
        "warmup": _WARMUP.value, "iters": _ITERS.value,
        "precisions": list(_PRECISIONS.value), "torch": _TORCH.value,
        "torch_model": _TORCH_MODEL.value,
        "torch_channels_last": _CHANNELS_LAST.value,
        "torch_tf32": _TF32.value,
        "step": f"PGD-{k} (random start, BN inference) + 1 SGD step",
    }


def _time_steps(step, sync, warmup: int, iters: int) -> dict:
    """Runs `step` warmup + iters times, each followed by `sync`; timings
    of the first call, the warm-up and each timed step."""
    start = time.perf_counter()
    sync(step())
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        sync(step())
    warm = time.perf_counter() - start
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {"first_call_s": first, "warmup_s": warm,
            "ms_per_step": float(ms.mean()),
            "ms_median": float(np.median(ms)), "ms_min": float(ms.min()),
            "ms_all": [float(t) for t in ms]}


def _batch(cfg: dict):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(cfg["batch_size"], *cfg["input_shape"]))
    y = rng.integers(0, cfg["num_classes"], cfg["batch_size"])
    return x.astype("float32"), y.astype("int32")


def _keras_row(cfg: dict, precision: str, x, y) -> dict:
    """One PGD-k AT step of our AdversarialTrainer under `precision`; the
    model is freed before returning."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        row = _keras_measure(cfg, x, y)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    gc.collect()
    return {**row, "precision": precision}


def _keras_measure(cfg: dict, x, y) -> dict:
    """Builds a fresh model + trainer under the current dtype policy and
    times `train_on_batch` (Keras's jitted train function on JAX)."""
    keras.utils.set_random_seed(0)
    net = models.create_model(
        cfg["model"], num_classes=cfg["num_classes"],
        input_shape=tuple(cfg["input_shape"]), **cfg["model_kwargs"])
    trainer = AdversarialTrainer(net, attack=cfg["attack"], rng_seed=0)
    trainer.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9),
        loss=classification_loss())
    x_dev, y_dev = jax.device_put(x), jax.device_put(y)

    def sync(logs):
        return [np.asarray(v) for v in jax.tree_util.tree_leaves(logs)]

    timing = _time_steps(lambda: trainer.train_on_batch(x_dev, y_dev),
                         sync, cfg["warmup"], cfg["iters"])
    loss = float(trainer.train_on_batch(x_dev, y_dev))
    return {"framework": "keras-jax (jit, AdversarialTrainer)",
            "model": cfg["model"], "params": int(net.count_params()),
            "jit_compile": trainer.jit_compile, "last_loss": loss,
            **timing}


def _import_torch(mode: str):
    """(torch, torchvision, None) or (None, None, why not)."""
    if mode == "off":
        return None, None, "disabled (--torch=off)"
    try:
        import torch
        import torchvision
    except ImportError as e:
        if mode == "on":
            raise
        return None, None, f"not available ({e})"
    return torch, torchvision, None


def _torch_reference(cfg: dict, torchvision) -> tuple:
    """(torchvision model name or None, note on how it compares)."""
    name, kwargs = cfg["torch_model"] or cfg["model"], cfg["model_kwargs"]
    known = set(torchvision.models.list_models(module=torchvision.models))
    if name not in known:
        return None, (f"no torchvision equivalent of {name!r}; pass "
                      "--torch_model=<torchvision name>")
    if cfg["input_shape"][-1] != 3:
        return None, "torchvision models take 3 input channels"
    if cfg["torch_model"] and cfg["torch_model"] != cfg["model"]:
        return name, (f"compared with torchvision.models.{name} "
                      f"(--torch_model), not {cfg['model']!r}")
    if kwargs:
        return name, (f"torchvision has no equivalent of {cfg['model']} "
                      f"with {json.dumps(kwargs)}; compared with plain "
                      f"torchvision.models.{name}")
    return name, f"same architecture: torchvision.models.{name}"


def _torch_pgd(torch, forward, x, y, cfg: dict, autocast):
    """Our trainer's PGD in PyTorch: random start, k sign steps projected
    onto the eps-ball and [0, 1], per example the worst post-step iterate
    (success first, then loss), the last one evaluated too. `autocast()`
    makes a fresh autocast context."""
    eps, k = cfg["eps"], cfg["pgd_steps"]
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp_(0.0, 1.0)
    best_x, best_succ = x_adv, torch.zeros_like(y, dtype=torch.bool)
    best_obj = torch.full(y.shape, -float("inf"), device=x.device)
    for i in range(k + 1):
        x_adv.requires_grad_(i < k)
        with autocast(), torch.set_grad_enabled(i < k):
            logits = forward(x_adv).float()
        obj = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        if i > 0:
            succ = logits.argmax(-1) != y
            take = (succ & ~best_succ) | ((succ == best_succ) &
                                          (obj > best_obj)) | (i == 1)
            best_x = torch.where(take[:, None, None, None], x_adv.detach(),
                                 best_x)
            best_obj = torch.where(take, obj.detach(), best_obj)
            best_succ = torch.where(take, succ, best_succ)
        if i == k:
            return best_x
        grad, = torch.autograd.grad(obj.sum(), x_adv)
        step = x_adv.detach() + cfg["step_size"] * grad.sign()
        x_adv = torch.clamp(torch.minimum(torch.maximum(step, x - eps),
                                          x + eps), 0.0, 1.0)
    return best_x


def _torch_row(torch, torchvision, cfg: dict, name: str, bf16: bool, x, y):
    """One PGD-k AT step of torchvision `name` in PyTorch eager."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fmt = (torch.channels_last if cfg["torch_channels_last"]
           else torch.contiguous_format)
    torch.manual_seed(0)
    net = torchvision.models.get_model(
        name, weights=None, num_classes=cfg["num_classes"])
    net = net.to(device, memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE, momentum=0.9)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).to(device)
    xt = xt.contiguous(memory_format=fmt)
    yt = torch.from_numpy(y).long().to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def forward(z):
        return net((z - mean) / std)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=bf16)

    def step():
        net.eval()
        x_adv = _torch_pgd(torch, forward, xt, yt, cfg, autocast)
        net.train()
        with autocast():
            loss = torch.nn.functional.cross_entropy(
                forward(x_adv).float(), yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def sync(loss):
        if device.type == "cuda":
            torch.cuda.synchronize()
        return loss

    timing = _time_steps(step, sync, cfg["warmup"], cfg["iters"])
    row = {"framework": "pytorch-eager", "model": f"torchvision.models."
           f"{name}", "precision": ("mixed_bfloat16 (bf16 autocast)" if bf16
                                    else "float32"), "device": str(device),
           "params": sum(p.numel() for p in net.parameters()),
           "last_loss": float(step()), **timing}
    return row


def _torch_free(torch) -> None:
    """Returns the freed PyTorch cache to the device (for JAX after it)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _torch_rows(cfg: dict, x, y) -> tuple:
    """(rows, info): PyTorch eager bf16 autocast always, float32 too when
    asked; info says what was compared, or why nothing was."""
    torch, torchvision, why = _import_torch(cfg["torch"])
    if torch is None:
        return [], {"status": why}
    info = {"status": "measured", "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
    name, info["reference"] = _torch_reference(cfg, torchvision)
    if name is None:
        info["status"] = "skipped"
        return [], info
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = cfg["torch_tf32"]
    torch.backends.cudnn.allow_tf32 = cfg["torch_tf32"]
    rows = []
    for bf16 in (True, False)[:1 + ("float32" in cfg["precisions"])]:
        rows.append(_torch_row(torch, torchvision, cfg, name, bf16, x, y))
        _torch_free(torch)
    for row in rows:
        row["img_per_s"] = cfg["batch_size"] / row["ms_per_step"] * 1e3
        row["note"] = info["reference"]
    return rows, info


def _add_ratios(ours: list, theirs: list) -> None:
    """Our img/s over PyTorch eager bf16's and over the same precision's."""
    by_precision = {r["precision"].split(" ")[0]: r for r in theirs}
    for row in ours:
        bf16 = by_precision.get("mixed_bfloat16")
        same = by_precision.get(row["precision"])
        row["ours_over_torch_eager_bf16_img_per_s"] = (
            row["img_per_s"] / bf16["img_per_s"] if bf16 else None)
        row["ours_over_torch_eager_same_precision_img_per_s"] = (
            row["img_per_s"] / same["img_per_s"] if same else None)


def _environment() -> dict:
    import jaxlib

    return {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "keras": keras.__version__, "numpy": np.__version__,
        "keras_backend": keras.backend.backend(),
        "jax_devices": [f"{d} ({d.device_kind})" for d in jax.devices()],
        "XLA_PYTHON_CLIENT_PREALLOCATE":
            os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "tf_only_modules_stubbed": sorted(set(_GUARD.used)),
    }


def _print(result: dict) -> None:
    print(f"{'framework':38s} {'precision':32s} {'ms/step':>9s} "
          f"{'img/s':>8s} {'1st s':>7s} {'vs torch bf16':>13s}")
    for r in result["rows"]:
        ratio = r.get("ours_over_torch_eager_bf16_img_per_s")
        print(f"{r['framework']:38s} {r['precision']:32s} "
              f"{r['ms_per_step']:9.1f} {r['img_per_s']:8.2f} "
              f"{r['first_call_s']:7.1f} "
              f"{'' if ratio is None else f'{ratio:.3f}':>13s}")
    print(f"torch: {json.dumps(result['torch'])}")
    print(f"tf-only modules stubbed: "
          f"{result['environment']['tf_only_modules_stubbed']}")


def main(argv):
    del argv
    if keras.backend.backend() != "jax":
        raise app.UsageError("this benchmark runs on KERAS_BACKEND=jax; got "
                             f"{keras.backend.backend()!r}")
    cfg = _config()
    x, y = _batch(cfg)
    # PyTorch first: its freed cache goes back to the device before JAX
    # grows its own pool.
    torch_rows, torch_info = _torch_rows(cfg, x, y)
    ours = []
    for precision in cfg["precisions"]:
        row = _keras_row(cfg, precision, x, y)
        row["img_per_s"] = cfg["batch_size"] / row["ms_per_step"] * 1e3
        ours.append(row)
    _add_ratios(ours, torch_rows)
    result = {"benchmark": "gpu_at_step", "config": cfg,
              "environment": _environment(), "torch": torch_info,
              "rows": ours + torch_rows}
    _print(result)
    if _OUTPUT.value:
        os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
