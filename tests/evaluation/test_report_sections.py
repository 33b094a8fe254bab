"""evaluation.report_sections: the gradient-free sanity comparison on a
randomized model queries the exact expectation when there is one, and the
report says so when there is not."""

import numpy as np

import attacks
import models
from evaluation.report_sections import first_examples, sanity_section
from layers import RandomResizePad


def _rrp_net():
    import keras

    keras.utils.set_random_seed(0)
    return models.create_model(
        "madry_cnn", num_classes=10, width=4,
        input_defenses=[RandomResizePad(max_size=32)])


def _run(tmp_path, exact):
    net = _rrp_net()
    eot = attacks.adaptive_model(net, eot_samples=2).attack_model
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 6)
    markdown = []
    out = sanity_section(
        eot, x, y, {"name": "pgd", "eps": 0.1, "step_size": 0.05,
                    "steps": 2},
        tmp_path / "r.json", markdown, randomized=True,
        exact_model=attacks.exact_eot(net) if exact else None)
    return out, "\n".join(markdown)


def test_square_queries_the_exact_expectation_when_given(tmp_path):
    out, md = _run(tmp_path, exact=True)
    assert set(out["others"]) == {"fgsm", "square-1000 (exact expectation)"}
    assert "weak check" not in md
    assert {c["name"] for c in out["checks"]} == {
        "eps_curve", "steps_curve", "whitebox_beats", "gradient"}


def test_sampled_square_on_a_randomized_model_is_labelled_weak(tmp_path):
    out, md = _run(tmp_path, exact=False)
    assert set(out["others"]) == {"fgsm", "square-1000"}
    assert "`whitebox_beats` is a weak check here" in md


def test_first_examples_stops_at_n():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (np.zeros((10, 2, 2, 1), "float32"), np.arange(10))).batch(3)
    x, y = first_examples(ds, 5)
    assert x.shape == (5, 2, 2, 1) and list(y) == [0, 1, 2, 3, 4]
