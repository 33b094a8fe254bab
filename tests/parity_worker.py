"""The half of tests/test_backend_parity.py that runs in a subprocess under
the OTHER Keras backend (and the table both halves share).

    KERAS_BACKEND=jax python tests/parity_worker.py MODEL.keras INPUTS.npz \
        OUT.npz SAVED.keras

loads MODEL.keras, runs every deterministic attack of `CASES` on the
inputs, writes the adversarial examples and logits to OUT.npz, and saves a
freshly built model (weights from INPUTS.npz) as SAVED.keras for the
reverse load.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import numpy as np  # noqa: E402

EPS = 0.1
# case -> (attack, kwargs): every attack whose result is a deterministic function of
# the weights and inputs (rand_init off; no random search), under settings
# small enough for a test. Attacks that always draw random numbers (APGD's
# and TRADES's starts, R+FGSM, Square, SPSA, one-pixel's evolution, EOT
# over random layers) draw them from each backend's own generator, so they
# are compared by their contract and strength tests instead.
CASES = {
    "fgsm": ("fgsm", dict(eps=EPS)),
    "fgm": ("fgm", dict(eps=1.0)),
    "bim": ("bim", dict(eps=EPS, step_size=0.02, steps=10)),
    "pgd_inf": ("pgd", dict(eps=EPS, step_size=0.02, steps=10,
                            rand_init=False)),
    "pgd_l2": ("pgd", dict(eps=1.0, step_size=0.25, steps=10,
                           rand_init=False, norm="2")),
    "pgd_cw_targeted": ("pgd", dict(eps=EPS, step_size=0.02, steps=10,
                                    rand_init=False, loss="cw",
                                    targeted=True)),
    "illc": ("illc", dict(eps=EPS, steps=5)),
    "mi_fgsm": ("mi_fgsm", dict(eps=EPS, steps=5)),
    "deepfool": ("deepfool", dict(steps=20, num_classes=10)),
    "cw_l2": ("cw_l2", dict(binary_search_steps=3, steps=30)),
    "cw_linf": ("cw_linf", dict(steps=20, max_rounds=5)),
    "cw_l0": ("cw_l0", dict(steps=20, max_rounds=3)),
    "lbfgs": ("lbfgs", dict(binary_search_steps=3, steps=20)),
}


def targets(y: np.ndarray) -> np.ndarray:
    return ((y + 1) % 10).astype("int32")


def run_all(model, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """`{case: x_adv}` for every case of `CASES`, plus `logits`."""
    import attacks

    out = {"logits": np.asarray(model(x, training=False))}
    for case, (name, kwargs) in CASES.items():
        labels = targets(y) if kwargs.get("targeted") else y
        fn = attacks.get_attack(name)
        out[case] = np.asarray(fn(model, x, labels, **kwargs))
    return out


def build_model(weights: list[np.ndarray] | None = None):
    """The small CNN both halves attack (madry_cnn, width 8, 28x28x1)."""
    import keras

    import models

    keras.utils.set_random_seed(0)
    net = models.create_model("madry_cnn", num_classes=10, width=8)
    if weights is not None:
        net.set_weights(weights)
    return net


def main(argv: list[str]) -> None:
    import keras

    model_path, inputs_path, out_path, saved_path = argv[1:5]
    inputs = np.load(inputs_path)
    model = keras.saving.load_model(model_path)
    results = run_all(model, inputs["x"], inputs["y"])
    weights = [inputs[f"w{i}"] for i in range(int(inputs["n_weights"]))]
    fresh = build_model(weights)
    fresh.save(saved_path)
    results["fresh_logits"] = np.asarray(fresh(inputs["x"], training=False))
    results["backend"] = np.asarray(keras.backend.backend())
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv)
