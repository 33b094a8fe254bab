r"""The TensorFlow-only parts of benchmarks/attacks.py: the peer libraries
that attack a TensorFlow model, the GPU names and the TensorFlow profiler.

benchmarks/attacks.py imports this module only when the Keras backend is
"tensorflow"; under JAX these peers are recorded as skipped.

  - ART 1.x: `ProjectedGradientDescent` on a `TensorFlowV2Classifier`;
  - cleverhans 4 (tf2): `projected_gradient_descent` inside a `tf.function`,
    with and without `jit_compile`;
  - foolbox 3: `LinfPGD(random_start=False)` on a `TensorFlowModel`.

Each builder returns a zero-argument callable that runs the whole attack
(BIM form: no random start) and returns x_adv (numpy or tensor).
"""

import json

import numpy as np
import tensorflow as tf

TF_VERSION = tf.__version__


def gpu_names():
    """The names of the visible GPUs (empty without one)."""
    return [tf.config.experimental.get_device_details(g).get("device_name",
                                                           g.name)
            for g in tf.config.list_physical_devices("GPU")]


def art(model, x, y, eps, step, k):
    """ART's `ProjectedGradientDescent` on a `TensorFlowV2Classifier`."""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    clf = TensorFlowV2Classifier(
        model=model, nb_classes=10, input_shape=x.shape[1:],
        loss_object=tf.keras.losses.CategoricalCrossentropy(
            from_logits=True),
        clip_values=(0.0, 1.0))
    attack = ProjectedGradientDescent(
        clf, norm=np.inf, eps=eps, eps_step=step, max_iter=k,
        targeted=False, num_random_init=0, batch_size=len(x),
        verbose=False)
    return lambda: attack.generate(x, y=y)


def cleverhans(infer, xt, yt, eps, step, k, jit):
    """cleverhans' `projected_gradient_descent` inside a `tf.function`."""
    from cleverhans.tf2.attacks.projected_gradient_descent import (
        projected_gradient_descent)

    @tf.function(jit_compile=jit)
    def run(xx, yy):
        return projected_gradient_descent(
            infer, xx, eps, step, k, np.inf, clip_min=0.0, clip_max=1.0,
            y=yy, targeted=False, rand_init=False, sanity_checks=False)
    return lambda: run(xt, yt)


def foolbox(infer, xt, y, eps, step, k):
    """foolbox's `LinfPGD(random_start=False)`."""
    import foolbox as fb

    y64 = tf.constant(y, tf.int64)
    # foolbox 3.3.4 (through eagerpy) calls np.find_common_type, removed
    # in NumPy 2.0, when dtypes mix (e.g. int32 labels; int64 labels, as
    # here, avoid it); same promotion through np.result_type. Benchmark
    # process only.
    if not hasattr(np, "find_common_type"):
        np.find_common_type = lambda a, s: np.result_type(*a, *s)
    fmodel = fb.TensorFlowModel(infer, bounds=(0.0, 1.0))
    attack = fb.attacks.LinfPGD(abs_stepsize=step, steps=k,
                                random_start=False)

    def run():
        _, clipped, _ = attack(fmodel, xt, y64, epsilons=eps)
        return clipped
    return run


def builders(model, x, y, xt, yt, eps, step, k):
    """Method name -> zero-argument builder of each TensorFlow peer (`x`,
    `y` numpy; `xt`, `yt` the same as tensors)."""
    def infer(v):
        return model(v, training=False)

    pgd = (eps, step, k)
    return {
        "art": lambda: art(model, x, y, *pgd),
        "cleverhans_tffunc": lambda: cleverhans(infer, xt, yt, *pgd, False),
        "cleverhans_tffunc_xla": lambda: cleverhans(infer, xt, yt, *pgd,
                                                    True),
        "foolbox": lambda: foolbox(infer, xt, y, *pgd),
    }


def _op_table(plugin, logdir, top):
    """Self time in ms per op type from the profile in `logdir`, converted
    by the profiler plugin `plugin`."""
    import glob

    xplane = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]
    data, ok = plugin.xspace_to_tools_data([xplane], "framework_op_stats",
                                           {})
    if not ok:
        return {"error": data.decode()[:200]}
    table = json.loads(data)[0]
    cols = [c["id"] for c in table["cols"]]
    by_type = {}
    for row in table["rows"]:
        cell = dict(zip(cols, [c["v"] if c else None for c in row["c"]]))
        if cell["type"] != "IDLE":
            by_type[cell["type"]] = (by_type.get(cell["type"], 0.0)
                                     + cell["total_self_time"] / 1e3)
    busiest = sorted(by_type.items(), key=lambda kv: -kv[1])[:top]
    return {"busy_ms": sum(by_type.values()),
            "top_op_types_ms": dict(busiest),
            "eigen_MaxPoolGrad": "MaxPoolGrad" in by_type,
            "onednn_MaxPoolGrad": any("MaxPoolGrad" in t and "Mkl" in t
                                      for t in by_type)}


def op_profile(call, error_text, top=8):
    """Self time in ms per op type for one `call()`, busiest first.

    Uses the profiler's converter from TensorFlow's private
    `_pywrap_profiler_plugin`; returns {"error": error_text(exception)}
    where unavailable.
    """
    import shutil
    import tempfile

    logdir = tempfile.mkdtemp(prefix="attacks_bench_prof_")
    try:
        from tensorflow.python.profiler.internal import (
            _pywrap_profiler_plugin as plugin)

        tf.profiler.experimental.start(logdir)
        try:
            call()
        finally:
            tf.profiler.experimental.stop()
        return _op_table(plugin, logdir, top)
    except Exception as e:  # noqa: BLE001 - private API, best effort
        return {"error": error_text(e)}
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


__all__ = ["TF_VERSION", "art", "builders", "cleverhans", "foolbox",
           "gpu_names", "op_profile"]
