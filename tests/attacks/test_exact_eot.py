"""`exact_eot`: the exact expectation over RandomResizePad's patterns."""

import numpy as np
import pytest
import keras
from keras import ops

import models
from attacks.exact_eot import exact_eot
from layers.random_resize_pad import RandomResizePad


@pytest.fixture(scope="module")
def rrp_model():
    return models.create_model(
        "madry_cnn", num_classes=10, width=4,
        input_defenses=[RandomResizePad(max_size=12, min_size=10,
                                        interpolation="bilinear")],
        input_shape=(10, 10, 1))


def test_patterns_are_the_whole_distribution(rrp_model):
    layer = [la for la in rrp_model.layers
             if isinstance(la, RandomResizePad)][0]
    patterns = layer.patterns()
    # sizes 10 and 11: 3^2 + 2^2 placements
    assert len(patterns) == 13
    assert np.isclose(sum(p for *_, p in patterns), 1.0)
    assert {(r, t, le) for r, t, le, _ in patterns} >= {(10, 0, 0),
                                                        (11, 1, 1)}


def test_equals_the_weighted_mean_over_patterns(rrp_model):
    x = np.random.default_rng(0).random((3, 10, 10, 1)).astype("float32")
    got = exact_eot(rrp_model)(x)
    layer = [la for la in rrp_model.layers
             if isinstance(la, RandomResizePad)][0]
    tail = keras.Model(layer.output, rrp_model.output)
    want = sum(p * ops.convert_to_numpy(tail(layer.transform(x, r, t, le)))
               for r, t, le, p in layer.patterns())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the sampled EOT converges to it
    draws = np.mean([ops.convert_to_numpy(rrp_model(x))
                     for _ in range(400)], axis=0)
    np.testing.assert_allclose(draws, want, atol=0.05 * np.abs(want).max())


def test_gradient_exists(rrp_model):
    from core import backends

    x = np.random.default_rng(1).random((2, 10, 10, 1)).astype("float32")
    fn = exact_eot(rrp_model)
    _, _, grad = backends.value_and_grad(
        lambda v: (ops.sum(fn(v)[:, 0]), None), x)
    grad = ops.convert_to_numpy(grad)
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0


def test_refusals(rrp_model):
    plain = models.create_model("madry_cnn", num_classes=10, width=4,
                                input_shape=(10, 10, 1))
    with pytest.raises(ValueError, match="exactly one active randomized"):
        exact_eot(plain)
    with pytest.raises(ValueError, match="13 patterns > max_patterns=5"):
        exact_eot(rrp_model, max_patterns=5)
