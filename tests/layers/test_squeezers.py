"""Tests for layers/squeezers.py against numpy / scipy references."""

import numpy as np
import pytest
import scipy.ndimage
from keras import ops

from core import backends
from layers.squeezers import BitDepthReduction, MedianSmoothing2D
from tests.layers.layer_harness import run_layer_test


def _images(shape=(2, 7, 6, 3), seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_bit_depth_matches_numpy(bits):
    x = _images()
    x.reshape(-1)[:3] = [0.0, 1.0, 0.5]
    scale = 2**bits - 1
    want = np.round(x * scale) / scale
    got = np.asarray(BitDepthReduction(bits=bits)(x))
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert len(np.unique(got)) <= 2**bits


@pytest.mark.parametrize("size", [1, 3, 5, (2, 2), (3, 2), (1, 4)])
def test_median_matches_scipy_mirror(size):
    x = _images()
    window = (size, size) if isinstance(size, int) else size
    # numpy-style "reflect" (edge not repeated) is scipy's "mirror".
    want = scipy.ndimage.median_filter(
        x, size=(1,) + window + (1,), mode="mirror"
    )
    np.testing.assert_array_equal(np.asarray(MedianSmoothing2D(size)(x)),
                                  want)


def test_median_gradient_reaches_selected_pixels():
    x = ops.convert_to_tensor(_images((1, 5, 5, 1)))
    _, _, grad = backends.value_and_grad(
        lambda v: (ops.sum(MedianSmoothing2D(3)(v)), None), x)
    grad = ops.convert_to_numpy(grad)
    assert np.isclose(grad.sum(), 25.0) and np.count_nonzero(grad) > 1


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (BitDepthReduction, {"bits": 4}),
        (MedianSmoothing2D, {"size": 3}),
        (MedianSmoothing2D, {"size": (2, 2)}),
    ],
)
def test_layer_contract(cls, kwargs):
    run_layer_test(cls, kwargs, (2, 6, 6, 3), (2, 6, 6, 3))


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (BitDepthReduction, {"bits": 0}, "bits"),
        (BitDepthReduction, {"bits": 9}, "bits"),
        (BitDepthReduction, {"bits": 2.0}, "bits"),
        (MedianSmoothing2D, {"size": 2}, "odd"),
        (MedianSmoothing2D, {"size": 0}, "size"),
        (MedianSmoothing2D, {"size": (3, 0)}, "size"),
        (MedianSmoothing2D, {"size": (3, 3, 3)}, "size"),
        (MedianSmoothing2D, {"size": "3"}, "size"),
    ],
)
def test_bad_args_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_threat_model_flags():
    assert (BitDepthReduction.differentiable, BitDepthReduction.randomized) == (
        False,
        False,
    )
    assert (MedianSmoothing2D.differentiable, MedianSmoothing2D.randomized) == (
        True,
        False,
    )
