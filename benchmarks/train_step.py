r"""Speed of the adversarial training step, as ratios within one process.

Measures, for one model and batch:
  - clean training step img/s (AdversarialTrainer without attack);
  - PGD-k adversarial training step img/s;
  - the "limit" of a PGD-k step: k bare input-gradient passes (forward +
    backward to the input, no projection or bookkeeping) plus one clean
    training step; and the ratio adversarial / limit (1.0 = no overhead).

    python benchmarks/train_step.py --model=madry_cnn --steps=7
    python benchmarks/train_step.py --model=resnet20 --input_size=32 \
        --channels=3 --steps=7 --output=benchmarks/results/resnet20.json

Timings are medians over --repeats runs of --iters steps each, after a
warm-up that traces and compiles everything. Runs on either Keras backend
(KERAS_BACKEND=tensorflow, the default, or jax); the steps go through
`train_on_batch` (Keras's compiled train function of that backend) and the
limit's input gradient through `core.backends`.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import models  # noqa: E402
from attacks import primitives  # noqa: E402
from core import backends  # noqa: E402
from training.adversarial import AdversarialTrainer  # noqa: E402
from training.losses import classification_loss  # noqa: E402

_MODEL = flags.DEFINE_string("model", "madry_cnn", "Registered model name.")
_WIDTH = flags.DEFINE_integer("width", None, "Model width override.")
_SIZE = flags.DEFINE_integer("input_size", 28, "Input height and width.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Input channels.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 7, "PGD iterations k.")
_ITERS = flags.DEFINE_integer("iters", 10, "Steps per timed run.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs (median taken).")
_OUTPUT = flags.DEFINE_string("output", None, "Write results as JSON here.")


def _median_seconds(fn, iters, repeats):
    fn()  # warm-up: trace / compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            out = fn()
        _ = [np.asarray(o) for o in keras.tree.flatten(out)]  # sync
        times.append((time.perf_counter() - start) / iters)
    return float(np.median(times))


def _trainer(attack, shape):
    keras.utils.set_random_seed(0)
    net = models.create_model(_MODEL.value, num_classes=10,
                              input_shape=shape, width=_WIDTH.value)
    model = AdversarialTrainer(net, attack=attack)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=classification_loss())
    return model


def _input_gradient_fn(net, x, y):
    """A compiled bare input-gradient pass (forward + backward to x)."""
    def grad(model, x, y):
        def objective(x):
            loss = primitives.per_example_loss(model(x, training=False), y,
                                               "ce")
            return keras.ops.sum(loss), ()
        return backends.value_and_grad(objective, x)[2]

    compiled = backends.compile_fn(grad)
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    return lambda: compiled(net, x, y)


def _machine() -> str:
    devices = keras.distribution.list_devices()
    return (f"{platform.machine()}, {os.cpu_count()} cores, "
            f"devices={devices}")


def main(argv):
    del argv
    shape = (_SIZE.value, _SIZE.value, _CHANNELS.value)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(_BATCH.value, *shape)).astype("float32")
    y = rng.integers(0, 10, _BATCH.value).astype("int32")
    k = _STEPS.value
    attack = {"name": "pgd", "eps": 0.1, "step_size": 0.025, "steps": k}

    clean = _trainer(None, shape)
    adv = _trainer(attack, shape)
    input_gradient = _input_gradient_fn(clean.net, x, y)

    it, rep = _ITERS.value, _REPEATS.value
    t_clean = _median_seconds(lambda: clean.train_on_batch(x, y), it, rep)
    t_adv = _median_seconds(lambda: adv.train_on_batch(x, y), it, rep)
    t_grad = _median_seconds(input_gradient, it * k, rep)
    limit = k * t_grad + t_clean
    b = _BATCH.value
    result = {
        "model": _MODEL.value, "input_shape": shape, "batch_size": b,
        "pgd_steps": k, "backend": keras.backend.backend(),
        "clean_step_img_per_s": b / t_clean,
        "adversarial_step_img_per_s": b / t_adv,
        "input_gradient_img_per_s": b / t_grad,
        "limit_img_per_s": b / limit,
        "adversarial_over_limit_time_ratio": t_adv / limit,
        "adversarial_over_clean_time_ratio": t_adv / t_clean,
        "machine": _machine(), "keras": keras.__version__,
        "backend_version": _backend_version(),
    }
    for key, value in result.items():
        print(f"{key:36s} {value:.3f}" if isinstance(value, float)
              else f"{key:36s} {value}")
    if _OUTPUT.value:
        os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)


def _backend_version() -> str:
    import importlib

    name = keras.backend.backend()
    return f"{name} {importlib.import_module(name).__version__}"


if __name__ == "__main__":
    app.run(main)
