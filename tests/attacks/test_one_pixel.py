"""One-pixel attack (Su et al. 2019): finds a known vulnerable pixel on a toy
model, L0 budget, never worse than x, elitism of the DE, reproducibility,
a CNN trained on real Fashion-MNIST, and the API contract."""


import keras
import numpy as np
import pytest
from keras import ops

from attacks.one_pixel import _distinct_others, one_pixel
from tests.attacks.linear_model import float64_scope, to_numpy

# The toy model's only sensitive input: pixel (3, 5), channel 2.
ROW, COL, CH = 3, 5, 2


def _toy(x):
    """3 classes on (8, 8, 3) images: class 0 while v = x[3, 5, 2] is in
    [0.2, 0.8], class 1 above 0.8, class 2 below 0.2; all other pixels are
    ignored."""
    v = ops.cast(x, "float32")[:, ROW, COL, CH]
    return ops.stack([ops.zeros_like(v), 10.0 * (v - 0.8),
                      10.0 * (0.2 - v)], -1)


def _changed_locations(x_adv, x):
    return np.any(x_adv != x, axis=-1).sum(axis=(1, 2))


@pytest.fixture(scope="module")
def grey():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, size=(4, 8, 8, 3)).astype("float32")
    x[:, ROW, COL, CH] = 0.5
    return x


def test_finds_the_one_vulnerable_pixel(grey):
    y = np.zeros(4, "int32")
    x_adv = to_numpy(one_pixel(_toy, grey, y, popsize=20, steps=30, seed=0))
    assert np.all(np.argmax(to_numpy(_toy(x_adv)), -1) != 0)
    # Exactly the vulnerable location changed, nothing else.
    diff = np.argwhere(np.any(x_adv != grey, axis=-1))
    np.testing.assert_array_equal(diff[:, 1:], [[ROW, COL]] * 4)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("target", [1, 2])
def test_targeted_reaches_each_side(grey, target):
    t = np.full(4, target, "int32")
    x_adv = to_numpy(one_pixel(_toy, grey, t, targeted=True, popsize=20,
                          steps=30, seed=1))
    np.testing.assert_array_equal(np.argmax(to_numpy(_toy(x_adv)), -1), t)
    assert np.all(_changed_locations(x_adv, grey) == 1)


def test_success_early_stop(grey):
    y = np.zeros(4, "int32")
    x_adv = to_numpy(one_pixel(_toy, grey, y, popsize=20, steps=30, seed=0,
                          early_stop="success"))
    assert np.all(np.argmax(to_numpy(_toy(x_adv)), -1) != 0)


def test_seed_reproducible_and_pixels_budget(grey):
    y = np.zeros(4, "int32")
    kw = dict(pixels=2, popsize=8, steps=3, early_stop="none")
    a = to_numpy(one_pixel(_toy, grey, y, seed=3, **kw))
    b = to_numpy(one_pixel(_toy, grey, y, seed=3, **kw))
    np.testing.assert_array_equal(a, b)
    assert np.all(_changed_locations(a, grey) <= 2)


def test_already_misclassified_returned_unchanged(grey):
    x = grey.copy()
    x[1, ROW, COL, CH] = 0.95  # class 1 already
    x_adv = to_numpy(one_pixel(_toy, x, np.zeros(4, "int32"), popsize=8,
                          steps=2, seed=0))
    np.testing.assert_array_equal(x_adv[1], x[1])


def test_dtype_kept_and_input_not_mutated(grey):
    with float64_scope():
        x64 = ops.convert_to_tensor(grey.astype(np.float64) + 1e-10)
        before = to_numpy(x64).copy()
        assert before.dtype == np.float64
        out = one_pixel(_toy, x64, None, popsize=8, steps=2, seed=0)
        assert keras.backend.standardize_dtype(out.dtype) == "float64"
        assert out.shape == x64.shape
        np.testing.assert_array_equal(to_numpy(x64), before)
        # Unchanged pixels are x's float64 values, not a float32 round trip.
        assert np.all(_changed_locations(to_numpy(out), before) <= 1)
    xs = grey.copy()
    one_pixel(_toy, xs, None, popsize=8, steps=2, seed=0)
    np.testing.assert_array_equal(xs, grey)


def test_distinct_donors():
    r = _distinct_others(np.random.default_rng(0), (50,), 4)
    own = np.broadcast_to(np.arange(4)[None, :, None], (50, 4, 1))
    every = np.concatenate([own, r], -1).reshape(-1, 4)
    assert np.all(np.sort(every, -1) == np.arange(4))


@pytest.fixture(scope="module")
def cnn(fmnist_cnn, fmnist_test):
    model = keras.saving.load_model(fmnist_cnn)
    x, y = fmnist_test[0][:40], fmnist_test[1][:40]
    keep = np.argmax(to_numpy(model(x, training=False)), -1) == y
    return model, x[keep][:20], y[keep][:20]


def _true_prob(model, x, y):
    p = to_numpy(ops.softmax(model(x, training=False)))
    return p[np.arange(len(y)), y], p.argmax(-1)


def test_cnn_three_pixels(cnn):
    model, x, y = cnn
    x_adv = to_numpy(one_pixel(model, x, y, pixels=3, popsize=50, steps=10,
                          seed=0))
    p0, _ = _true_prob(model, x, y)
    p1, pred = _true_prob(model, x_adv, y)
    succ = pred != y
    print(f"\none_pixel (3 px, 50 x 10) on fmnist_cnn: success "
          f"{succ.mean():.2f}, median p_true {np.median(p0):.3f} -> "
          f"{np.median(p1):.3f}")
    assert np.all(_changed_locations(x_adv, x) <= 3)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    # The DE never makes things worse, and it breaks some images.
    assert np.all(p1 <= p0 + 1e-5)
    assert np.median(p1) < np.median(p0)
    assert succ.sum() >= 1


def test_more_generations_never_worse(cnn):
    # Same seed: the first generation is shared, and DE selection is
    # elitist per member, so the best fitness can only improve.
    model, x, y = cnn
    kw = dict(pixels=1, popsize=20, early_stop="none", seed=5)
    short = to_numpy(one_pixel(model, x[:8], y[:8], steps=1, **kw))
    long = to_numpy(one_pixel(model, x[:8], y[:8], steps=6, **kw))
    p_short, _ = _true_prob(model, short, y[:8])
    p_long, _ = _true_prob(model, long, y[:8])
    assert np.all(p_long <= p_short + 1e-5)
    assert np.all(_changed_locations(long, x[:8]) <= 1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(pixels=0), "pixels"),
    (dict(pixels=65), "pixels"),
    (dict(popsize=3), "popsize"),
    (dict(popsize=2.5), "popsize"),
    (dict(steps=0), "steps"),
    (dict(mutation=0.0), "mutation"),
    (dict(mutation=2.5), "mutation"),
    (dict(early_stop="never"), "early_stop"),
    (dict(batch_size=0), "batch_size"),
    (dict(clip_min=1.0, clip_max=0.0), "clip_min"),
    (dict(targeted=True, y=None), "targeted"),
])
def test_bad_args_raise(grey, kwargs, match):
    y = kwargs.pop("y", np.zeros(4, "int32"))
    with pytest.raises(ValueError, match=match):
        one_pixel(_toy, grey, y, **kwargs)


def test_x_outside_box_raises(grey):
    with pytest.raises(ValueError, match="clip_min"):
        one_pixel(_toy, grey + 1.0, np.zeros(4, "int32"))


def test_registered():
    from attacks._registry import ATTACKS
    assert ATTACKS.get("one_pixel") is one_pixel
