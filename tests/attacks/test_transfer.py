"""Transfer attacks: crafted on a source model, never querying the target."""

import keras
import numpy as np
import pytest

import attacks
from attacks.transfer import transfer

from tests.attacks.linear_model import LinearSoftmax

KW = dict(eps=0.1, step_size=0.01, steps=20, seed=0)


def _never_called(x):
    raise AssertionError("a transfer attack queried the target model")


def test_target_is_never_queried_and_source_is_used():
    src = LinearSoftmax(seed=0)
    x, y = src.inputs()
    got = np.asarray(transfer(attacks.pgd, src)(_never_called, x, y, **KW))
    want = np.asarray(attacks.pgd(src, x, y, **KW))
    np.testing.assert_array_equal(got, want)
    assert np.abs(got - x).max() <= 0.1 + 1e-6


def test_works_with_from_config_and_keeps_the_signature():
    src = LinearSoftmax(seed=1)
    x, y = src.inputs()
    bound = attacks.from_config({"name": "fgsm", "eps": 0.05})
    got = np.asarray(transfer(bound, src)(_never_called, x, y))
    np.testing.assert_array_equal(got, attacks.fgsm(src, x, y, eps=0.05))


@pytest.mark.parametrize("attack,source", [(None, len), ("pgd", len),
                                           (attacks.pgd, 3)])
def test_non_callables_raise(attack, source):
    with pytest.raises(TypeError, match="attack|source"):
        transfer(attack, source)


def test_transfer_from_cnn_to_linear_model(fmnist_cnn, fmnist_test):
    """PGD crafted on the CNN hurts an independently trained softmax
    regression far more than random +-eps noise, and less than white-box
    PGD on the target itself (measured: clean 0.84, noise 0.81, transfer
    0.55, white-box 0.06 on 500 images)."""
    from data.fashion_mnist import load_fashion_mnist

    x_tr, y_tr = load_fashion_mnist("train")
    x_tr = x_tr[:20000, ..., None].astype("float32") / 255.0
    keras.utils.set_random_seed(0)
    target = keras.Sequential([keras.Input((28, 28, 1)),
                               keras.layers.Flatten(), keras.layers.Dense(10)])
    target.compile(optimizer=keras.optimizers.Adam(1e-2),
                   loss=keras.losses.SparseCategoricalCrossentropy(
                       from_logits=True))
    target.fit(x_tr, y_tr[:20000].astype("int32"), batch_size=200, epochs=2,
               verbose=0)
    source = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:500], fmnist_test[1][:500]

    def acc(x_eval):
        pred = np.argmax(np.asarray(target(x_eval, training=False)), 1)
        return float(np.mean(pred == y))

    x_tr_adv = np.asarray(transfer(attacks.pgd, source)(target, x, y, **KW))
    noise = np.random.default_rng(0).choice([-0.1, 0.1], size=x.shape)
    x_noise = np.clip(x + noise, 0, 1).astype("float32")
    x_wb = np.asarray(attacks.pgd(target, x, y, **KW))
    clean, rand, moved, white = acc(x), acc(x_noise), acc(x_tr_adv), acc(x_wb)
    print(f"\nclean {clean:.3f} noise {rand:.3f} transfer {moved:.3f} "
          f"white-box {white:.3f}")
    assert clean > 0.75
    assert moved < rand - 0.15
    assert white < moved - 0.2
    assert np.abs(x_tr_adv - x).max() <= 0.1 + 1e-6
