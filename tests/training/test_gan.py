"""Tests for `training.gan.fit_gan`: one epoch on 256 random images runs on
the current backend with finite per-epoch losses, returns a generator of
the right shape and range, and checks its arguments; each of the two
`train_on_batch` steps moves only its own network's weights."""

import keras
import numpy as np
import pytest

from training.gan import _models, _step, fit_gan


def _images(n=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, 28, 28, 1)).astype("float32")


def _fit(seed=0):
    return fit_gan(_images(), latent_dim=8, epochs=1, batch_size=64,
                   width=4, seed=seed, verbose=0)


def test_one_epoch_gives_finite_losses_and_a_generator():
    generator, history = _fit()
    assert set(history) == {"d_loss", "g_loss"}
    assert all(len(v) == 1 and np.isfinite(v[0]) for v in history.values())
    # BCE on logits: both losses are positive.
    assert history["d_loss"][0] > 0 and history["g_loss"][0] > 0
    z = np.random.default_rng(1).standard_normal((5, 8)).astype("float32")
    x = keras.ops.convert_to_numpy(generator(z))
    assert generator.input_shape == (None, 8)
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert all(layer.trainable for layer in generator.layers)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _changed(before, model):
    return [not np.array_equal(a, b)
            for a, b in zip(before, model.get_weights())]


def test_each_step_trains_only_its_network():
    g, d, combined = _models((28, 28, 1), 8, 4, 2e-4, 0.5)
    rng = np.random.default_rng(0)
    for _ in range(2):  # the trainable flag toggles back and forth
        g0, d0 = _weights(g), _weights(d)
        _step(_images(64), rng, g, d, combined, 8)
        assert all(_changed(g0, g)) and all(_changed(d0, d))
        g0, d0 = _weights(g), _weights(d)
        d.trainable = False  # the generator step alone
        combined.train_on_batch(rng.standard_normal((64, 8)), np.ones((64, 1)))
        assert all(_changed(g0, g)) and not any(_changed(d0, d))


@pytest.mark.parametrize("images, kwargs, match", [
    (_images().astype("float64"), {}, "images must be a float32"),
    (_images()[..., 0], {}, "images must be a float32"),
    (_images() * 255, {}, r"images must lie in \[0, 1\]"),
    (_images(), {"epochs": 0}, "epochs must be an int >= 1"),
    (_images(), {"batch_size": 512}, "need at least batch_size=512"),
    (_images(), {"learning_rate": -1.0}, "learning_rate must be"),
    (_images(), {"beta_1": 1.0}, r"beta_1 must be in \[0, 1\)"),
])
def test_bad_args_raise(images, kwargs, match):
    kwargs = {"epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        fit_gan(images, **kwargs)
