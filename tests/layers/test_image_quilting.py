"""Tests for layers/image_quilting.py against numpy brute force."""

import keras
import numpy as np
import pytest
from keras import ops

from attacks.bpda import with_straight_through
from core import backends
from layers.image_quilting import ImageQuilting
from tests.layers.layer_harness import run_layer_test, save_load_outputs

SHAPE = (3, 10, 9, 2)  # not multiples of the patch size 4: padding is used
P = 4


def _images(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


def _tiles(x, size=P):
    """numpy reference: edge-pad to multiples of `size`, cut into
    non-overlapping tiles -> `(batch, rows, cols, size * size * C)`."""
    n, h, w, c = x.shape
    x = np.pad(x, ((0, 0), (0, -h % size), (0, -w % size), (0, 0)),
               mode="edge")
    rows, cols = x.shape[1] // size, x.shape[2] // size
    t = x.reshape(n, rows, size, cols, size, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(n, rows, cols, size * size * c)


def _quilt_db(seed=1, num=60):
    return _images((num, P * P * SHAPE[-1]), seed=seed)


def _row_index(tiles, database):
    """Index of the database row equal to each tile (-1 if none)."""
    eq = np.all(np.abs(tiles[..., None, :] - database) < 1e-6, axis=-1)
    return np.where(eq.any(-1), eq.argmax(-1), -1)


def test_layer_contract():
    run_layer_test(ImageQuilting,
                   {"patch_size": P, "neighbours": 3, "database": _quilt_db(),
                    "seed": 0},
                   SHAPE, SHAPE, expected_num_non_trainable_weights=1)


def test_threat_model_flags():
    assert ImageQuilting.randomized is True
    assert ImageQuilting.differentiable is False


def test_database_of_the_input_patches_gives_the_input():
    x = _images()
    own = _tiles(x).reshape(-1, P * P * SHAPE[-1])
    database = np.concatenate([_quilt_db(), own])  # distractors first
    layer = ImageQuilting(P, neighbours=1, database=database, seed=0)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), x, atol=1e-6)


def test_nearest_matches_brute_force_across_chunks():
    database, queries = _quilt_db(num=53), _images((20, 32), seed=5)
    layer = ImageQuilting(P, neighbours=5, database=database, chunk_size=7)
    layer.build((None, P, P, 2))
    index, dist = (ops.convert_to_numpy(t) for t in layer.nearest(queries))
    want = ((queries[:, None] - database[None]) ** 2).sum(-1)
    order = np.argsort(want, axis=1)[:, :5]
    np.testing.assert_array_equal(index, order)
    np.testing.assert_allclose(dist, np.take_along_axis(want, order, 1),
                               rtol=1e-4, atol=1e-5)


def test_output_tiles_are_drawn_among_the_k_nearest():
    x, database = _images(), _quilt_db()
    layer = ImageQuilting(P, neighbours=4, database=database, seed=1)
    out = _tiles(ops.convert_to_numpy(layer(x)))[:, :2, :2]  # full tiles
    chosen = _row_index(out, database)
    assert np.all(chosen >= 0), "an output tile is not a database patch"
    want = ((_tiles(x)[:, :2, :2, None] - database) ** 2).sum(-1)
    nearest = np.argsort(want, axis=-1)[..., :4]
    assert np.all((nearest == chosen[..., None]).any(-1))


def test_draw_is_uniform_over_the_k_nearest():
    x = np.repeat(_images((1, P, P, 2), seed=9), 300, axis=0)
    database = _quilt_db()
    layer = ImageQuilting(P, neighbours=3, database=database, seed=2)
    chosen = _row_index(_tiles(ops.convert_to_numpy(layer(x))), database)
    want = ((_tiles(x[:1]) - database) ** 2).sum(-1).ravel()
    counts = [np.sum(chosen == i) for i in np.argsort(want)[:3]]
    assert sum(counts) == 300 and min(counts) > 70, counts  # ~100 each


def test_calls_differ_and_seed_reproduces():
    x, database = _images(), _quilt_db()
    a = ImageQuilting(P, neighbours=5, database=database, seed=3)
    b = ImageQuilting(P, neighbours=5, database=database, seed=3)
    first, second = (ops.convert_to_numpy(a(x)) for _ in range(2))
    assert np.abs(first - second).max() > 0
    np.testing.assert_array_equal(ops.convert_to_numpy(b(x)), first)
    np.testing.assert_array_equal(ops.convert_to_numpy(b(x)), second)


def test_from_images_samples_distinct_real_patches():
    images = _images((3, 6, 5, 2), seed=4)
    layer = ImageQuilting.from_images(images, patch_size=3, max_patches=20,
                                      neighbours=2, seed=0)
    layer.build((None, 6, 5, 2))
    database = ops.convert_to_numpy(layer.database)
    windows = np.stack([images[n, i:i + 3, j:j + 3].ravel()
                        for n in range(3) for i in range(4)
                        for j in range(3)])  # all 36 positions
    found = _row_index(database, windows)
    assert database.shape == (20, 18) and np.all(found >= 0)
    assert len(set(found)) == 20
    everything = ImageQuilting.from_images(images, 3, max_patches=1000)
    assert everything.num_patches == 36


def test_compiled_calls_advance_and_predict_match_eager():
    x, database = _images(), _quilt_db()
    kwargs = {"patch_size": P, "neighbours": 5, "database": database,
              "seed": 6}
    layer, twin = ImageQuilting(**kwargs), ImageQuilting(**kwargs)
    layer.build(SHAPE)  # weights exist before tracing, as in a model
    compiled = backends.compile_fn(lambda lay, v: lay(v))
    outs = [ops.convert_to_numpy(compiled(layer, ops.convert_to_tensor(x)))
            for _ in range(2)]
    for out in outs:
        np.testing.assert_allclose(out, ops.convert_to_numpy(twin(x)),
                                   atol=1e-6)
    assert np.abs(outs[0] - outs[1]).max() > 0
    inputs = keras.Input(SHAPE[1:])
    model = keras.Model(inputs, ImageQuilting(**kwargs)(inputs))
    np.testing.assert_allclose(model.predict(x, verbose=0), outs[0],
                               atol=1e-6)


def test_keras_save_load_keeps_the_database():
    layer = ImageQuilting.from_images(_images((4, 10, 9, 2), seed=7), P,
                                      max_patches=50, neighbours=3, seed=8)
    inputs = keras.Input(SHAPE[1:])
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(layer(inputs)))
    before, after = save_load_outputs(model, _images())
    np.testing.assert_allclose(before, after, atol=1e-6)
    revived = keras.Model.from_config(model.get_config())  # no weights
    assert revived.layers[1].num_patches == 50
    assert not np.any(ops.convert_to_numpy(revived.layers[1].database))


@pytest.mark.parametrize("kwargs, match", [
    ({"patch_size": 0, "num_patches": 5}, "patch_size must be an int >= 1"),
    ({"neighbours": 0, "num_patches": 5}, "neighbours must be an int >= 1"),
    ({"chunk_size": 2.0, "num_patches": 5}, "chunk_size must be"),
    ({}, "pass database, or num_patches"),
    ({"num_patches": 0}, "pass database, or num_patches"),
    ({"neighbours": 6, "num_patches": 5}, r"neighbours must be in \[1, 5\]"),
    ({"database": np.zeros((5, 15))}, "database must be a finite float"),
    ({"database": np.full((5, 16), np.nan)}, "database must be a finite"),
    ({"database": np.zeros((5, 16)), "num_patches": 4},
     "num_patches must be None or len"),
])
def test_bad_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageQuilting(**kwargs)


def test_bad_input_raises_on_build():
    layer = ImageQuilting(P, neighbours=2, database=_quilt_db())
    with pytest.raises(ValueError, match="need 48"):
        layer(keras.Input((8, 8, 3)))
    with pytest.raises(ValueError, match="static height"):
        ImageQuilting(P, 2, num_patches=4)(keras.Input((None, None, 1)))
    with pytest.raises(ValueError, match="max_patches must be"):
        ImageQuilting.from_images(_images((1, 8, 8, 1)), P, max_patches=0)
    with pytest.raises(ValueError, match="height, width >= patch_size"):
        ImageQuilting.from_images(_images((1, 3, 8, 1)), P)


def test_straight_through_gradient_is_exact_and_finite():
    """`attacks.bpda.with_straight_through`, compiled: the input gradient of
    sum(output) is exactly ones, so the layer leaks no gradient of its own
    (nor NaN) into the identity surrogate."""
    x = ops.convert_to_tensor(_images())
    inputs = keras.Input(tuple(x.shape[1:]))
    layer = ImageQuilting(P, neighbours=3, database=_quilt_db(), seed=0)
    model = with_straight_through(keras.Model(inputs, layer(inputs)))
    step = backends.compile_fn(lambda net, v: backends.value_and_grad(
        lambda u: (ops.sum(net(u)), None), v))
    value, _, grad = step(model, x)
    np.testing.assert_array_equal(ops.convert_to_numpy(grad), 1.0)
    assert np.isfinite(float(value))
