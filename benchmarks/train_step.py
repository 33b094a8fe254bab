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
warm-up that traces and compiles everything.
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
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import models  # noqa: E402
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
        _ = [np.asarray(o) for o in tf.nest.flatten(out)]  # sync
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


def main(argv):
    del argv
    shape = (_SIZE.value, _SIZE.value, _CHANNELS.value)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(_BATCH.value, *shape)), tf.float32)
    y = tf.constant(rng.integers(0, 10, _BATCH.value), tf.int32)
    k = _STEPS.value
    attack = {"name": "pgd", "eps": 0.1, "step_size": 0.025, "steps": k}

    clean = _trainer(None, shape)
    adv = _trainer(attack, shape)
    clean.make_train_function()
    adv.make_train_function()
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    clean_it, adv_it = iter(data), iter(data)

    net = clean.net

    @tf.function
    def input_gradient():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                y, net(x, training=False)))
        return tape.gradient(loss, x)

    it, rep = _ITERS.value, _REPEATS.value
    t_clean = _median_seconds(lambda: clean.train_function(clean_it), it, rep)
    t_adv = _median_seconds(lambda: adv.train_function(adv_it), it, rep)
    t_grad = _median_seconds(input_gradient, it * k, rep)
    limit = k * t_grad + t_clean
    b = _BATCH.value
    result = {
        "model": _MODEL.value, "input_shape": shape, "batch_size": b,
        "pgd_steps": k,
        "clean_step_img_per_s": b / t_clean,
        "adversarial_step_img_per_s": b / t_adv,
        "input_gradient_img_per_s": b / t_grad,
        "limit_img_per_s": b / limit,
        "adversarial_over_limit_time_ratio": t_adv / limit,
        "adversarial_over_clean_time_ratio": t_adv / t_clean,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"GPUs={len(tf.config.list_physical_devices('GPU'))}",
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }
    for key, value in result.items():
        print(f"{key:36s} {value:.3f}" if isinstance(value, float)
              else f"{key:36s} {value}")
    if _OUTPUT.value:
        os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    app.run(main)
