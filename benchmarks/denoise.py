r"""Cost of each NonLocalDenoise kind relative to the bottleneck block it
follows, at the res2..res5 feature shapes of a 224x224 input (56, 28, 14, 7
pixels; 256, 512, 1024, 2048 channels), forward + backward, in one process.

    python benchmarks/denoise.py --batch_size=2 \
        --output=benchmarks/results/denoise.json

The ratio is time(denoise block) / time(one ResNet-50 bottleneck block with
an identity shortcut at that shape); Xie et al. 2019 (arXiv 1812.03411)
report that the Gaussian (softmax) block "lacks an efficient GPU
implementation" and that ResNet-152 + 4 denoise trained ~1.7x slower.

Runs on the Keras backend of KERAS_BACKEND ("tensorflow" by default, or
"jax"); the forward + backward step is compiled with `core.backends`
(`tf.function` / `jax.jit`).
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from keras import ops  # noqa: E402

from core import backends  # noqa: E402
from layers.nonlocal_denoise import KINDS, NonLocalDenoise  # noqa: E402
from models.resnet import bottleneck_block  # noqa: E402

_BATCH = flags.DEFINE_integer("batch_size", 2, "Batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs (median).")
_OUTPUT = flags.DEFINE_string("output", None, "Write results as JSON here.")

STAGES = {"res2": (56, 256), "res3": (28, 512), "res4": (14, 1024),
          "res5": (7, 2048)}


def _fwd_bwd(model, x):
    """Gradients of sum(model(x)^2) wrt `x` and the trainable weights."""
    def loss_fn(xx):
        return ops.sum(ops.square(model(xx, training=True))), ()

    _, _, grads, (grad_x,) = backends.gradients(
        loss_fn, model.trainable_weights, [x])
    return [grad_x] + list(grads)


def _fwd_bwd_seconds(model, x, repeats):
    compiled = backends.compile_fn(_fwd_bwd)

    def step():
        return compiled(model, x)

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = step()
        _ = ops.convert_to_numpy(out[0])
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _block_model(size, channels):
    inputs = keras.Input((size, size, channels))
    out = bottleneck_block(inputs, filters=channels // 4, strides=1,
                           groups=1, width_per_group=64, name="block")
    return keras.Model(inputs, out)


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    results = []
    for stage, (size, channels) in STAGES.items():
        x = ops.convert_to_tensor(rng.normal(
            size=(_BATCH.value, size, size, channels)).astype("float32"))
        base = _fwd_bwd_seconds(_block_model(size, channels), x,
                                _REPEATS.value)
        row = {"stage": stage, "shape": [size, size, channels],
               "bottleneck_ms": 1000 * base}
        for kind in KINDS:
            inputs = keras.Input((size, size, channels))
            model = keras.Model(inputs, NonLocalDenoise(kind=kind)(inputs))
            row[f"{kind}_ratio"] = _fwd_bwd_seconds(
                model, x, _REPEATS.value) / base
        results.append(row)
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else
                       f"{k}={v}" for k, v in row.items()), flush=True)
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump({"batch_size": _BATCH.value, "device": "CPU",
                       "backend": backends.BACKEND, "rows": results}, f,
                      indent=2)


if __name__ == "__main__":
    app.run(main)
