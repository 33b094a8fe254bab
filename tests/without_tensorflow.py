"""Runs a script as if TensorFlow were not installed:

    KERAS_BACKEND=jax python tests/without_tensorflow.py train.py --flags...

A `sys.meta_path` finder makes every import of `tensorflow`,
`tensorflow_datasets` (and their submodules) fail with ImportError, as on a
machine without them; then the script runs as `__main__`. Used by
tests/test_without_tensorflow.py; a real TensorFlow-free virtualenv gives
the same result (README, "JAX").
"""

import importlib.abc
import os
import runpy
import sys

BLOCKED = ("tensorflow", "tensorflow_datasets", "tf_keras")


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (blocked: this run "
                              "simulates a machine without TensorFlow)")
        return None


def main() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            raise RuntimeError(f"{name} was imported before the blocker")
    sys.meta_path.insert(0, _NoTensorFlow())
    script = sys.argv[1]
    root = os.path.dirname(os.path.abspath(script))
    sys.path.insert(0, root)
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
