"""evaluation.report_sections: the gradient-free sanity comparison on a
randomized model queries the exact expectation when there is one, and the
report says so when there is not."""

import numpy as np
import pytest

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


@pytest.mark.tensorflow_only
def test_first_examples_stops_at_n():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (np.zeros((10, 2, 2, 1), "float32"), np.arange(10))).batch(3)
    x, y = first_examples(ds, 5)
    assert x.shape == (5, 2, 2, 1) and list(y) == [0, 1, 2, 3, 4]


def test_first_examples_of_numpy_batches_and_a_py_dataset():
    """The JAX input path: any iterable of array pairs, and the
    keras.utils.PyDataset of data.numpy_pipeline."""
    from data.numpy_pipeline import ArrayDataset
    from data.options import PipelineOptions

    x_all = np.arange(10 * 4, dtype="float32").reshape(10, 2, 2, 1) / 40
    batches = [(x_all[i:i + 3], np.arange(10)[i:i + 3])
               for i in range(0, 10, 3)]
    x, y = first_examples(iter(batches), 5)
    assert x.shape == (5, 2, 2, 1) and list(y) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(x, x_all[:5])
    x, y = first_examples(batches, 50)  # fewer than asked: all of them
    assert x.shape == (10, 2, 2, 1) and list(y) == list(range(10))
    ds = ArrayDataset(np.arange(10 * 4, dtype="uint8").reshape(10, 2, 2),
                      np.arange(10), PipelineOptions(batch_size=3))
    x, y = first_examples(ds, 5)
    assert x.shape == (5, 2, 2, 1) and x.dtype == np.float32
    assert list(y) == [0, 1, 2, 3, 4]
