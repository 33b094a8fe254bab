"""Helpers shared by the train.py tests."""

import os
import pathlib
import subprocess
import sys
from unittest import mock

import keras
import numpy as np
from absl import flags
from absl.testing import flagsaver

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_train(workdir, recipe, *overrides, strategy="one_device"):
    """Runs train.main in this process, as `python train.py ...` would."""
    import train

    argv = train.expand_recipe_name(
        ["train.py", f"--recipe={recipe}", f"--workdir={workdir}",
         f"--strategy={strategy}", *overrides])
    # ml_collections reads `--recipe.a.b=v` overrides from sys.argv itself.
    with flagsaver.flagsaver(), mock.patch.object(sys, "argv", argv):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
        train.main([])


def run_evaluate(*argv):
    """Runs evaluate.main in this process, as `python evaluate.py ARGV`."""
    import evaluate

    argv = ["evaluate.py", *argv]
    with flagsaver.flagsaver(), mock.patch.object(sys, "argv", argv):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
        evaluate.main([])


def train_process(workdir, recipe, *overrides, env=None, strategy=None):
    """Starts `python train.py` as a subprocess (returns the Popen)."""
    args = [sys.executable, "train.py", f"--recipe={recipe}",
            f"--workdir={workdir}", *overrides]
    if strategy:
        args.append(f"--strategy={strategy}")
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.Popen(args, cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def final_weights(workdir):
    model = keras.saving.load_model(pathlib.Path(workdir) / "model.keras")
    return [np.asarray(w) for w in model.get_weights()]
