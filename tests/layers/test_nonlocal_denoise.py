"""Tests for layers/nonlocal_denoise.py against numpy / scipy references."""

import keras
import numpy as np
import pytest
import scipy.ndimage
from keras import ops

from core import backends
from layers.nonlocal_denoise import (
    KINDS,
    NonLocalDenoise,
    _dot_product_aggregate,
)
from tests.layers.layer_harness import run_layer_test, save_load_outputs

EPS = 1e-5
SHAPE = (2, 4, 5, 6)


def _features(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _softmax(z, axis=-1):
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def _ref_denoise(kind, x, wt=None, wp=None):
    """Numpy D(x); `wt`, `wp` are (C, d) embedding matrices or None."""
    x = x.astype("float64")
    b, h, w, c = x.shape
    theta = x if wt is None else x @ wt
    phi = x if wp is None else x @ wp
    d = theta.shape[-1]
    if kind in ("gaussian", "dot_product"):
        t = theta.reshape(b, h * w, d)
        p = phi.reshape(b, h * w, d)
        g = x.reshape(b, h * w, c)
        aff = np.einsum("bid,bjd->bij", t, p)
        if kind == "gaussian":
            y = np.einsum("bij,bjc->bic", _softmax(aff / np.sqrt(d)), g)
        else:
            y = np.einsum("bij,bjc->bic", aff, g) / (h * w)
        return y.reshape(b, h, w, c)
    if kind == "bilateral":
        y = np.zeros_like(x)
        for i in range(h):
            for j in range(w):
                nb = [
                    (i + di, j + dj)
                    for di in (-1, 0, 1)
                    for dj in (-1, 0, 1)
                    if 0 <= i + di < h and 0 <= j + dj < w
                ]
                logits = np.stack(
                    [np.sum(theta[:, i, j] * phi[:, a, e], -1) for a, e in nb],
                    axis=-1,
                ) / np.sqrt(d)
                wts = _softmax(logits)
                vals = np.stack([x[:, a, e] for a, e in nb], axis=1)
                y[:, i, j] = np.einsum("bk,bkc->bc", wts, vals)
        return y
    if kind == "mean":
        # Zero padding, divided by the number of in-image neighbours.
        size = (1, 3, 3, 1)
        sums = scipy.ndimage.uniform_filter(x, size, mode="constant") * 9
        counts = scipy.ndimage.uniform_filter(
            np.ones_like(x), size, mode="constant"
        ) * 9
        return sums / np.round(counts)
    if kind == "median":
        return scipy.ndimage.median_filter(x, size=(1, 3, 3, 1), mode="mirror")
    raise AssertionError(kind)


def _layer(kind, embed, shape=SHAPE):
    layer = NonLocalDenoise(kind, embed=embed)
    layer.build(shape)
    return layer


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("embed", [True, False])
def test_identity_at_init(kind, embed):
    x = _features()
    layer = _layer(kind, embed)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    np.testing.assert_array_equal(np.asarray(layer(x, training=True)), x)


@pytest.mark.parametrize("kind", KINDS)
def test_identity_survives_save_load(kind):
    x = _features()
    inputs = keras.Input(shape=SHAPE[1:])
    model = keras.Model(inputs, NonLocalDenoise(kind)(inputs))
    before, after = save_load_outputs(model, x)
    np.testing.assert_array_equal(before, x)
    np.testing.assert_array_equal(after, x)


def _activate(layer, seed=1):
    """gamma = 1, beta = 0; embeddings rescaled so softmaxes are peaked."""
    rng = np.random.default_rng(seed)
    layer.bn.gamma.assign(np.ones(layer.bn.gamma.shape, "float32"))
    layer.bn.beta.assign(np.zeros(layer.bn.beta.shape, "float32"))
    if layer.uses_embedding:
        for conv in (layer.embedding_theta, layer.embedding_phi):
            conv.kernel.assign(
                rng.normal(size=conv.kernel.shape).astype("float32")
            )


@pytest.mark.parametrize(
    "kind, embed",
    [
        ("gaussian", True),
        ("gaussian", False),
        ("dot_product", True),
        ("dot_product", False),
        ("bilateral", True),
        ("bilateral", False),
        ("mean", True),
        ("median", True),
    ],
)
def test_matches_reference(kind, embed):
    x = _features()
    layer = _layer(kind, embed)
    _activate(layer)
    wt = wp = None
    if layer.uses_embedding:
        wt = np.asarray(layer.embedding_theta.kernel)[0, 0]
        wp = np.asarray(layer.embedding_phi.kernel)[0, 0]
    d_ref = _ref_denoise(kind, x, wt, wp)
    np.testing.assert_allclose(
        np.asarray(layer.denoise(x)), d_ref, rtol=1e-4, atol=1e-5
    )
    wc = np.asarray(layer.conv.kernel)[0, 0].astype("float64")
    want = x + (d_ref @ wc) / np.sqrt(1.0 + EPS)
    got = np.asarray(layer(x, training=False))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Trained-looking weights survive a save / load round trip.
    inputs = keras.Input(shape=SHAPE[1:])
    model = keras.Model(inputs, layer(inputs))
    before, after = save_load_outputs(model, x)
    np.testing.assert_allclose(before, got, atol=1e-6)
    np.testing.assert_array_equal(after, before)


def test_bilateral_is_local():
    # Changing a pixel more than one step away leaves D at (0, 0) unchanged.
    x = _features((1, 5, 5, 4))
    layer = _layer("bilateral", True, (1, 5, 5, 4))
    _activate(layer)
    y = x.copy()
    y[0, 3:, 3:] += 10.0
    np.testing.assert_allclose(
        np.asarray(layer.denoise(x))[0, :2, :2],
        np.asarray(layer.denoise(y))[0, :2, :2],
        atol=1e-6,
    )


@pytest.mark.parametrize("n, c", [(20, 6), (4, 12)])
def test_dot_product_orders_agree(n, c):
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(2, n, 3)).astype("float32")
    phi = rng.normal(size=(2, n, 3)).astype("float32")
    g = rng.normal(size=(2, n, c)).astype("float32")
    want = np.einsum("bid,bjd,bjc->bic", theta, phi, g) / n
    for order in ("channels", "positions", None):
        got = _dot_product_aggregate(theta, phi, g, order=order)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4,
                                   atol=1e-5)


def test_dot_product_layer_uses_positions_order_when_c_gt_n():
    # C = 12 > N = 4: the N x N branch runs inside the layer too.
    x = _features((2, 2, 2, 12))
    layer = _layer("dot_product", False, x.shape)
    _activate(layer)
    np.testing.assert_allclose(
        np.asarray(layer.denoise(x)), _ref_denoise("dot_product", x),
        rtol=1e-4, atol=1e-5,
    )


def _n_params(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.mark.parametrize(
    "kind, embed, want",
    [
        ("gaussian", True, 2 * (16 * 8) + 16 * 16 + 2 * 16),
        ("bilateral", True, 2 * (16 * 8) + 16 * 16 + 2 * 16),
        ("dot_product", True, 2 * (16 * 8) + 16 * 16 + 2 * 16),
        ("gaussian", False, 16 * 16 + 2 * 16),
        ("dot_product", False, 16 * 16 + 2 * 16),
        ("bilateral", False, 16 * 16 + 2 * 16),
        ("mean", True, 16 * 16 + 2 * 16),
        ("median", True, 16 * 16 + 2 * 16),
    ],
)
def test_param_counts(kind, embed, want):
    layer = _layer(kind, embed, (1, 4, 4, 16))
    assert _n_params(layer.trainable_weights) == want
    assert _n_params(layer.non_trainable_weights) == 2 * 16
    paths = {w.path.split("/", 1)[1] for w in layer.weights}
    expected = {"conv/kernel", "bn/gamma", "bn/beta", "bn/moving_mean",
                "bn/moving_variance"}
    if layer.uses_embedding:
        expected |= {"embedding_theta/kernel", "embedding_phi/kernel"}
    assert paths == expected


def test_gradients_flow_to_input_and_weights():
    x = ops.convert_to_tensor(_features())
    layer = _layer("gaussian", True)
    _activate(layer)

    def loss_fn(v):
        return ops.sum(layer(v, training=True) ** 2), None

    _, _, g_vars, g_x = backends.gradients(loss_fn, layer.trainable_weights,
                                           [x])
    grads = list(g_x) + list(g_vars)
    assert len(grads) == 1 + len(layer.trainable_weights)
    assert all(g is not None and np.all(np.isfinite(np.asarray(g)))
               for g in grads)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("embed", [True, False])
def test_layer_contract(kind, embed):
    uses = embed and kind in ("gaussian", "dot_product", "bilateral")
    run_layer_test(
        NonLocalDenoise,
        {"kind": kind, "embed": embed},
        SHAPE,
        SHAPE,
        expected_num_trainable_weights=5 if uses else 3,
        expected_num_non_trainable_weights=2,
        input_data=_features(),
        run_training=embed,  # one fit per kind is enough
    )


def test_dynamic_spatial_size():
    inputs = keras.Input(shape=(None, None, 6))
    model = keras.Model(inputs, NonLocalDenoise("gaussian")(inputs))
    x = _features((1, 3, 7, 6))
    np.testing.assert_array_equal(np.asarray(model(x)), x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "nonlocal"}, "gaussian.*dot_product.*mean.*median"),
        ({"kind": "Gaussian"}, "kind must be one of"),
        ({"embed": 1}, "embed"),
    ],
)
def test_bad_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NonLocalDenoise(**kwargs)


def test_bad_input_shapes_raise():
    with pytest.raises(ValueError, match="channel"):
        NonLocalDenoise().build((None, 4, 4, None))
    with pytest.raises(ValueError, match="height, width"):
        NonLocalDenoise().build((None, 16, 16))
    with pytest.raises(ValueError, match=">= 2 channels"):
        NonLocalDenoise().build((None, 4, 4, 1))


def test_config_and_flags():
    layer = NonLocalDenoise("median", embed=False, name="nl")
    config = layer.get_config()
    assert (config["kind"], config["embed"], config["name"]) == (
        "median", False, "nl"
    )
    assert NonLocalDenoise.differentiable is True
    assert NonLocalDenoise.randomized is False
