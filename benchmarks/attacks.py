r"""PGD-k throughput of our attack against peer libraries, in one process.

For one model and one batch, times the same L-inf PGD-k attack (BIM form:
no random start, for every implementation, so that all do identical work and
their outputs can be compared) in:
  - ours: `attacks.pgd`, with and without `jit_compile`;
  - ART 1.x: `ProjectedGradientDescent` on a `TensorFlowV2Classifier`;
  - cleverhans 4 (tf2): `projected_gradient_descent` inside a `tf.function`,
    with and without `jit_compile`;
  - foolbox 3: `LinfPGD(random_start=False)` on a `TensorFlowModel`;
  - "the limit", with and without `jit_compile`: (a) `grads`: k calls of a
    compiled function returning the cross-entropy gradient wrt x (the k
    forward + backward passes PGD cannot avoid, plus k dispatches); (b)
    `loop`: one compiled function with a k-iteration loop (one
    `keras.ops.fori_loop`) of gradient, sign step, projection onto the
    eps-ball and the box (bare PGD: no best-iterate bookkeeping, no final
    evaluation, no validation).

Runs on the Keras backend of KERAS_BACKEND ("tensorflow" by default, or
"jax"). The peers attack a TensorFlow model (benchmarks/peers_tensorflow.py,
imported only under TensorFlow): under JAX they are recorded as skipped,
and so is the op profile (TensorFlow's profiler); JAX always compiles with
XLA, so there the `_xla` variants repeat the plain ones.

    python benchmarks/attacks.py --model=madry_cnn --batch_size=100
    python benchmarks/attacks.py --model=resnet20 --repeats=3
    KERAS_BACKEND=jax python benchmarks/attacks.py --model=madry_cnn

Each method runs once as a warm-up (tracing, XLA compilation; excluded), then
--repeats timed calls, interleaved round-robin across methods so that load
from other processes hits all of them alike; the median is reported as
images per second (batch / seconds per attack call). A peer that fails is
recorded with its error text and skipped. Results go to
benchmarks/results/attacks_<model>.json unless --output says otherwise.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import importlib.metadata  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from keras import ops  # noqa: E402

import attacks  # noqa: E402
import models  # noqa: E402
from attacks import primitives  # noqa: E402
from core import backends  # noqa: E402

if backends.BACKEND == "tensorflow":
    from benchmarks import peers_tensorflow  # noqa: E402
else:
    peers_tensorflow = None

_MODEL = flags.DEFINE_string("model", "madry_cnn", "Registered model name.")
_WIDTH = flags.DEFINE_integer("width", None, "Model width override.")
_SIZE = flags.DEFINE_integer(
    "input_size", None, "Input height and width (default: 28 for "
    "madry_cnn, else 32).")
_CHANNELS = flags.DEFINE_integer(
    "channels", None, "Input channels (default: 1 for madry_cnn, else 3).")
_BATCH = flags.DEFINE_integer("batch_size", 100, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "PGD iterations k.")
_EPS = flags.DEFINE_float(
    "eps", None, "L-inf eps (default 0.1 for 28x28x1, else 8/255).")
_STEP_SIZE = flags.DEFINE_float(
    "step_size", None, "Step size (default eps / 10).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls (median taken).")
_TRAIN = flags.DEFINE_integer(
    "train_examples", 10000, "For 28x28x1 inputs: train the model for one "
    "epoch on this many Fashion-MNIST training images and attack real test "
    "images (0: untrained weights). Other shapes use untrained weights and "
    "uniform random images; speed does not depend on the weights.")
_ONLY = flags.DEFINE_list(
    "only", None, "Run only these methods (names as in the table).")
_OP_PROFILE = flags.DEFINE_bool(
    "op_profile", True, "After timing, profile one call of each method with "
    "the TensorFlow profiler and record its busiest op types (shows which "
    "kernels ran, e.g. oneDNN vs Eigen MaxPoolGrad). TensorFlow backend "
    "only.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "JSON path (default benchmarks/results/"
    "attacks_<model>.json).")

PEER_PACKAGES = {"art": "adversarial-robustness-toolbox",
                 "foolbox": "foolbox", "cleverhans": "cleverhans"}
# The peers, in table order, by library; each attacks a TensorFlow model.
TF_PEERS = {"art": "art", "cleverhans_tffunc": "cleverhans",
            "cleverhans_tffunc_xla": "cleverhans", "foolbox": "foolbox"}
SKIPPED_TF_ONLY = "skipped: TensorFlow backend only"


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_names():
    """The GPUs: their names under TensorFlow, their Keras device ids
    ("gpu:0", ...) under JAX."""
    if peers_tensorflow is not None:
        return peers_tensorflow.gpu_names()
    return [d for d in keras.distribution.list_devices()
            if not d.startswith("cpu")]


def _device():
    names = _gpu_names()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores"
            + (f", GPUs: {', '.join(names)}" if names else ", no GPU"))


def _data(shape, batch):
    """(model, x, y, description) for the benchmark."""
    keras.utils.set_random_seed(0)
    net = models.create_model(_MODEL.value, num_classes=10, input_shape=shape,
                              width=_WIDTH.value)
    if tuple(shape) == (28, 28, 1):
        from data.fashion_mnist import load_fashion_mnist

        x, y = load_fashion_mnist("test")
        x = x[:batch, ..., None].astype("float32") / 255.0
        y = y[:batch].astype("int32")
        n = _TRAIN.value
        if n > 0:
            xt, yt = load_fashion_mnist("train")
            net.compile(optimizer=keras.optimizers.Adam(1e-3),
                        loss=keras.losses.SparseCategoricalCrossentropy(
                            from_logits=True))
            net.fit(xt[:n, ..., None].astype("float32") / 255.0,
                    yt[:n].astype("int32"), batch_size=100, epochs=1,
                    verbose=0)
        what = (f"Fashion-MNIST test images; weights trained 1 epoch on {n} "
                "training images" if n > 0 else
                "Fashion-MNIST test images; untrained weights")
        return net, x, y, what
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, *shape)).astype("float32")
    y = rng.integers(0, 10, batch).astype("int32")
    return net, x, y, "uniform random images; untrained weights"


def _ours(model, xt, yt, eps, step, k, jit):
    """Our `attacks.pgd` in BIM form."""
    def run():
        return attacks.pgd(model, xt, yt, eps=eps, step_size=step,
                           steps=k, rand_init=False, jit_compile=jit)
    return run


def _input_grad(model, xx, yy):
    """The gradient wrt x of the summed cross-entropy of `model` at `xx`."""
    def objective(v):
        logits = model(v, training=False)
        return ops.sum(ops.sparse_categorical_crossentropy(
            yy, logits, from_logits=True)), ()
    return backends.value_and_grad(objective, xx)[2]


_GRAD = backends.compile_fn(_input_grad)
_GRAD_XLA = backends.compile_fn(_input_grad, jit_compile=True)


def _limit_grads(model, xt, yt, k, jit):
    """The limit (a): k calls of the compiled gradient."""
    grad = _GRAD_XLA if jit else _GRAD

    def run():
        for _ in range(k):
            g = grad(model, xt, yt)
        return g
    return run


def _bare_pgd(model, x0, yy, eps, step, steps):
    """Bare PGD: `steps` sign steps from `x0`, each projected onto the
    eps-ball and the box, in one `keras.ops.fori_loop`."""
    def body(i, x_adv):
        g = _input_grad(model, x_adv, yy)
        x_adv = x_adv + step * ops.sign(g)
        return ops.clip(x0 + ops.clip(x_adv - x0, -eps, eps), 0.0, 1.0)
    return ops.fori_loop(0, steps, body, x0)


_LOOP = backends.compile_fn(_bare_pgd)
_LOOP_XLA = backends.compile_fn(_bare_pgd, jit_compile=True)


def _limit_loop(model, xt, yt, eps, step, k, jit):
    """The limit (b): bare PGD-k in one compiled function."""
    loop = _LOOP_XLA if jit else _LOOP
    eps_t, step_t = primitives.as_scalar(eps), primitives.as_scalar(step)
    steps_t = ops.convert_to_tensor(int(k), "int32")
    return lambda: loop(model, xt, yt, eps_t, step_t, steps_t)


def _peers(model, x, y, xt, yt, eps, step, k):
    """Name -> (library, builder) of the TensorFlow peers; builder None
    (skipped) under another backend."""
    if peers_tensorflow is None:
        return {name: (lib, None) for name, lib in TF_PEERS.items()}
    build = peers_tensorflow.builders(model, x, y, xt, yt, eps, step, k)
    return {name: (lib, build[name]) for name, lib in TF_PEERS.items()}


def _methods(model, x, y, eps, step, k):
    """Name -> (library, builder); a builder returns a zero-argument callable
    that runs the whole attack and returns x_adv (numpy or tensor). The
    builder of a peer that needs another backend is None."""
    xt, yt = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
    pgd = (eps, step, k)
    return {
        "ours": ("ours", lambda: _ours(model, xt, yt, *pgd, False)),
        "ours_xla": ("ours", lambda: _ours(model, xt, yt, *pgd, True)),
        **_peers(model, x, y, xt, yt, *pgd),
        "limit_grads": (
            "limit", lambda: _limit_grads(model, xt, yt, k, False)),
        "limit_grads_xla": (
            "limit", lambda: _limit_grads(model, xt, yt, k, True)),
        "limit_loop": (
            "limit", lambda: _limit_loop(model, xt, yt, *pgd, False)),
        "limit_loop_xla": (
            "limit", lambda: _limit_loop(model, xt, yt, *pgd, True)),
    }


def _op_profile(fn, top=8):
    """Self time in ms per op type for one call of `fn`, busiest first
    (TensorFlow's profiler: benchmarks/peers_tensorflow.op_profile)."""
    return peers_tensorflow.op_profile(lambda: _numpy(fn()), _error, top)


def _numpy(out):
    return np.asarray(out.numpy() if hasattr(out, "numpy") else out)


def _error(e):
    last = traceback.extract_tb(e.__traceback__)[-1]
    return (f"{type(e).__name__}: {e} (at {os.path.basename(last.filename)}:"
            f"{last.lineno})")


def _shape_and_budget():
    """`(input shape, eps, step size)` from the flags and their defaults."""
    default_mnist = _MODEL.value == "madry_cnn"
    size = _SIZE.value or (28 if default_mnist else 32)
    channels = _CHANNELS.value or (1 if default_mnist else 3)
    shape = (size, size, channels)
    eps = _EPS.value or (0.1 if shape == (28, 28, 1) else 8 / 255)
    step = _STEP_SIZE.value or eps / 10
    return shape, eps, step


def _warm_up(methods):
    """Builds and warms up (trace, compile) every method; failures recorded.
    Returns `(runs, status, outputs, warmup_s)`, dicts by method name."""
    runs, status, outputs, warmup_s = {}, {}, {}, {}
    for name, (_, build) in methods.items():
        if build is None:
            status[name] = SKIPPED_TF_ONLY
            print(f"warm-up {name:24s} {status[name]}", flush=True)
            continue
        try:
            fn = build()
            start = time.perf_counter()
            outputs[name] = _numpy(fn())
            warmup_s[name] = time.perf_counter() - start
            runs[name] = fn
            status[name] = "ran"
        except Exception as e:  # noqa: BLE001 - a peer may fail in any way
            status[name] = "failed: " + _error(e)
        print(f"warm-up {name:24s} {status[name]}", flush=True)
    return runs, status, outputs, warmup_s


def _time_runs(runs):
    """Wall and process CPU seconds of --repeats calls of every method, run
    round-robin; returns `(times, cpu_times)`, lists by method name."""
    times = {name: [] for name in runs}
    cpu_times = {name: [] for name in runs}
    for _ in range(_REPEATS.value):
        for name, fn in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            _numpy(fn())  # includes the copy to host: the result is used
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu)
    return times, cpu_times


def _agreement(model, x, y, outputs):
    """Clean accuracy, and per method its robust accuracy, L-inf distance
    to x and agreement with our output."""
    # Same attack, same start: outputs should be (nearly) the same points.
    logits = np.asarray(model(x, training=False))
    agreement = {"clean_accuracy": float(np.mean(logits.argmax(1) == y))}
    ref = outputs.get("ours")
    for name, out in outputs.items():
        if name.startswith("limit_grads") or out.shape != x.shape:
            continue
        pred = np.asarray(model(out, training=False)).argmax(1)
        entry = {"robust_accuracy": float(np.mean(pred == y)),
                 "linf_to_x": float(np.abs(out - x).max())}
        if ref is not None:
            entry["fraction_pixels_equal_to_ours"] = float(
                np.mean(np.abs(out - ref) <= 1e-5))
        agreement[name] = entry
    return agreement


def _ratio(img_s, a, c):
    """Throughput of method `a` over that of `c`; None unless both ran."""
    return img_s[a] / img_s[c] if a in img_s and c in img_s else None


def _ratios(methods, img_s):
    """Throughput of ours over the peers', and time of ours over the
    limits' (key "fastest_peer" names the fastest peer)."""
    peers = [n for n, (lib, _) in methods.items()
             if lib not in ("ours", "limit") and n in img_s]
    fastest = max(peers, key=img_s.get) if peers else None
    ratios = {"fastest_peer": fastest}
    for o in ("ours", "ours_xla"):
        ratios[f"{o}_over_fastest_peer"] = _ratio(img_s, o, fastest) \
            if fastest else None
        ratios[f"{o}_over_art"] = _ratio(img_s, o, "art")
        ratios[f"{o}_over_foolbox"] = _ratio(img_s, o, "foolbox")
        ratios[f"{o}_over_cleverhans_tffunc"] = _ratio(
            img_s, o, "cleverhans_tffunc")
        ratios[f"{o}_over_cleverhans_tffunc_xla"] = _ratio(
            img_s, o, "cleverhans_tffunc_xla")
    # limit/ours: time of ours over time of the limit (1.0 = no overhead),
    # each in the same compilation mode.
    for o, suffix in (("ours", ""), ("ours_xla", "_xla")):
        for lim in ("limit_grads", "limit_loop"):
            ratios[f"{o}_time_over_{lim}{suffix}_time"] = _ratio(
                img_s, lim + suffix, o)
    return ratios


def _bar(img_s, fastest):
    """Whether our best variant clears the targets; None unless both ours
    and a peer ran."""
    best_ours = max((n for n in ("ours", "ours_xla") if n in img_s),
                    key=img_s.get, default=None)
    best_limit = max((n for n in img_s if n.startswith("limit")),
                     key=img_s.get, default=None)
    if not (best_ours and fastest):
        return None
    return {
        "ours_variant": best_ours,
        "ours_ge_fastest_peer": img_s[best_ours] >= img_s[fastest],
        "ours_ge_3x_art": ("art" in img_s
                           and img_s[best_ours] >= 3 * img_s["art"]),
        "ours_ge_3x_foolbox": ("foolbox" in img_s and img_s[best_ours]
                               >= 3 * img_s["foolbox"]),
        "limit_variant": best_limit,
        "ours_time_le_1.1x_limit": bool(
            best_limit and img_s[best_limit] / img_s[best_ours] <= 1.1),
    }


def _print_report(result, methods):
    """Prints the table of methods, the ratios, the bar and the op profile."""
    img_s, status = result["img_per_s"], result["status"]
    median = result["median_s_per_attack"]
    cpu_median = result["median_cpu_s_per_attack"]
    print(f"\nPGD-{result['pgd_steps']} on {result['model']} "
          f"{result['input_shape']}, batch {result['batch_size']}, "
          f"{result['device']}, {_backend_version()}")
    print(f"{'method':24s} {'img/s':>10s} {'s/attack':>10s} "
          f"{'cpu s':>8s} {'vs ours':>8s}  status")
    for name in methods:
        if name in img_s:
            rel = _ratio(img_s, "ours", name)
            print(f"{name:24s} {img_s[name]:10.1f} {median[name]:10.4f} "
                  f"{cpu_median[name]:8.3f} "
                  f"{rel if rel else float('nan'):8.2f}  ran")
        else:
            print(f"{name:24s} {'-':>10s} {'-':>10s} {'-':>8s} {'-':>8s}  "
                  f"{status[name]}")
    print("\nratios (throughput ours / other; time ours / limit):")
    for key, value in result["ratios"].items():
        print(f"  {key:44s} "
              + (f"{value:.3f}" if isinstance(value, float) else f"{value}"))
    print(f"bar: {result['bar']}")
    op_profile = result["op_profile"]
    if op_profile:
        print("\nop profile of one call (busy ms; MaxPoolGrad kernel):")
        for name, prof in op_profile.items():
            if "error" in prof:
                print(f"  {name:24s} {prof['error']}")
                continue
            kernel = ("Eigen" if prof["eigen_MaxPoolGrad"] else "oneDNN"
                      if prof["onednn_MaxPoolGrad"] else "-")
            print(f"  {name:24s} {prof['busy_ms']:9.1f}  {kernel}")


def _backend_version():
    """The report title's backend: "TF <version>" or "JAX <version>"."""
    if peers_tensorflow is not None:
        return f"TF {peers_tensorflow.TF_VERSION}"
    return f"{backends.BACKEND.upper()} {_version(backends.BACKEND)}"


def _write(result):
    """Writes `result` to --output (default results/attacks_<model>.json)."""
    path = _OUTPUT.value or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results",
        f"attacks_{_MODEL.value}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")


def _backend_versions():
    """{"tensorflow": version} under TensorFlow; {"tensorflow": None,
    "jax": version} under JAX."""
    if peers_tensorflow is not None:
        return {"tensorflow": peers_tensorflow.TF_VERSION}
    return {"tensorflow": None, backends.BACKEND: _version(backends.BACKEND)}


def main(argv):
    del argv
    logging.getLogger("art").setLevel(logging.WARNING)  # per-call chatter
    shape, eps, step = _shape_and_budget()
    k, b = _STEPS.value, _BATCH.value

    model, x, y, data_desc = _data(shape, b)
    methods = _methods(model, x, y, eps, step, k)
    if _ONLY.value:
        methods = {n: m for n, m in methods.items() if n in _ONLY.value}

    runs, status, outputs, warmup_s = _warm_up(methods)
    times, cpu_times = _time_runs(runs)
    median = {n: float(np.median(t)) for n, t in times.items()}
    cpu_median = {n: float(np.median(t)) for n, t in cpu_times.items()}
    img_s = {n: b / t for n, t in median.items()}

    # Eager peers (ART, foolbox) run op by op; the op-stats converter does
    # not attribute their kernels, so only compiled methods are profiled.
    # TensorFlow's profiler: none under another backend.
    op_profile = ({n: _op_profile(fn) for n, fn in runs.items()
                   if methods[n][0] in ("ours", "cleverhans", "limit")}
                  if _OP_PROFILE.value and peers_tensorflow is not None
                  else None)
    agreement = _agreement(model, x, y, outputs)
    ratios = _ratios(methods, img_s)
    bar = _bar(img_s, ratios["fastest_peer"])

    result = {
        "model": _MODEL.value, "input_shape": shape, "batch_size": b,
        "pgd_steps": k, "eps": eps, "step_size": step,
        "random_start": False, "data": data_desc,
        "repeats": _REPEATS.value,
        "device": _device(),
        "backend": backends.BACKEND, **_backend_versions(),
        "keras": keras.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "versions": {lib: _version(dist)
                     for lib, dist in PEER_PACKAGES.items()},
        "status": status,
        "img_per_s": img_s,
        "median_s_per_attack": median,
        "all_times_s": times,
        # Process CPU time (all threads): less sensitive than wall time to
        # other processes on a shared machine; not what img/s is based on.
        "median_cpu_s_per_attack": cpu_median,
        "all_cpu_times_s": cpu_times,
        "warmup_s": warmup_s,
        "ratios": ratios,
        "bar": bar,
        "output_agreement": agreement,
        "op_profile": op_profile,
    }
    _print_report(result, methods)
    _write(result)


if __name__ == "__main__":
    app.run(main)
