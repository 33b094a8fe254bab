"""Tests for `layers.defense_gan_projection` (Samangouei et al. 2018, arXiv
1805.06605): a point of the generator's range is recovered, more steps
lower the error, the output is the best restart (numpy reference), the
layer is random per call and reproducible per seed, compiled and eager
agree, and a defended Sequential round-trips through `.keras`."""

import keras
import numpy as np
import pytest
from keras import ops

from attacks.bpda import with_straight_through
from core import backends
from layers.defense_gan_projection import DefenseGanProjection
from tests.layers.layer_harness import run_layer_test, save_load_outputs

LATENT = 4
SHAPE = (8, 8, 1)


def _generator(seed=0):
    """A tiny generator: z (batch, 4) -> sigmoid(Dense) as 8x8x1 images."""
    keras.utils.set_random_seed(seed)
    z = keras.Input((LATENT,))
    h = keras.layers.Dense(int(np.prod(SHAPE)), activation="sigmoid")(z)
    return keras.Model(z, keras.layers.Reshape(SHAPE)(h))


def _range_images(generator, batch=3, seed=1):
    z = np.random.default_rng(seed).standard_normal((batch, LATENT))
    return ops.convert_to_numpy(generator(z.astype("float32")))


def _mse(a, b):
    return np.mean((np.asarray(a) - np.asarray(b)) ** 2, axis=(-3, -2, -1))


def _project(x, **kwargs):
    return ops.convert_to_numpy(DefenseGanProjection(**kwargs)(x))


def test_layer_contract():
    # Weights: the frozen generator's kernel and bias (Keras lists the seed
    # state among `variables`, not `weights`).
    run_layer_test(DefenseGanProjection,
                   {"generator": _generator(), "steps": 3, "restarts": 2,
                    "seed": 0},
                   (2,) + SHAPE, (2,) + SHAPE,
                   expected_num_non_trainable_weights=2)


def test_threat_model_flags():
    assert DefenseGanProjection.differentiable is False
    assert DefenseGanProjection.randomized is True


def test_recovers_a_point_of_the_range_and_more_steps_help():
    g = _generator()
    x = _range_images(g)
    errors = [_mse(_project(x, generator=g, steps=steps, restarts=3,
                            seed=7), x)
              for steps in (1, 5, 40)]
    # Same seed: the same starts, descended further.
    assert np.all(errors[1] < errors[0]) and np.all(errors[2] < errors[1])
    assert np.all(errors[2] < 1e-6), errors[2]


def test_output_is_the_restart_with_the_smallest_error():
    g = _generator()
    x = np.random.default_rng(2).uniform(size=(4,) + SHAPE).astype("float32")
    kwargs = {"generator": g, "steps": 3, "restarts": 5, "seed": 11}
    twin = DefenseGanProjection(**kwargs)  # replays the layer's draws
    out = _project(x, **kwargs)
    images, errors = (ops.convert_to_numpy(t) for t in twin.descend(x))
    assert images.shape == (4, 5) + SHAPE and errors.shape == (4, 5)
    want_errors = _mse(images, x[:, None])
    np.testing.assert_allclose(errors, want_errors, rtol=1e-5)
    best = np.argmin(want_errors, axis=1)
    np.testing.assert_array_equal(out, images[np.arange(4), best])
    # The restarts really differ, so the choice matters.
    assert np.all(np.ptp(want_errors, axis=1) > 1e-6)


def test_random_per_call_and_reproducible_per_seed():
    g = _generator()
    x = np.random.default_rng(3).uniform(size=(2,) + SHAPE).astype("float32")
    kwargs = {"generator": g, "steps": 2, "restarts": 2, "seed": 5}
    layer = DefenseGanProjection(**kwargs)
    first, second = (ops.convert_to_numpy(layer(x)) for _ in range(2))
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(_project(x, **kwargs), first)


def test_compiled_call_matches_eager():
    g = _generator()
    x = _range_images(g, batch=2)
    kwargs = {"generator": g, "steps": 4, "restarts": 3, "seed": 9}
    layer, twin = DefenseGanProjection(**kwargs), DefenseGanProjection(
        **kwargs)
    layer.build(x.shape)
    compiled = backends.compile_fn(lambda layer, x: layer(x))
    for _ in range(2):  # the seed state advances across compiled calls
        got = ops.convert_to_numpy(compiled(layer, ops.convert_to_tensor(x)))
        np.testing.assert_allclose(got, ops.convert_to_numpy(twin(x)),
                                   atol=1e-6)


def test_no_input_gradient_and_straight_through_attack_model():
    g = _generator()
    x = ops.convert_to_tensor(_range_images(g, batch=2))
    net = keras.Sequential([keras.Input(SHAPE),
                            DefenseGanProjection(g, steps=2, restarts=2)])

    def objective(v):
        y = net(v)
        return ops.sum(y), y

    try:  # TensorFlow: no gradient at all; JAX: zeros
        grad = backends.value_and_grad(objective, x)[2]
        assert not np.any(ops.convert_to_numpy(grad))
    except ValueError as err:
        assert "bpda" in str(err)
    attack_net = with_straight_through(net)

    def attack_objective(v):
        y = attack_net(v)
        return ops.sum(y), y

    grad = backends.value_and_grad(attack_objective, x)[2]
    np.testing.assert_array_equal(ops.convert_to_numpy(grad), 1.0)


def test_defended_sequential_round_trips_through_keras_file():
    g = _generator()
    x = _range_images(g, batch=2)
    net = keras.Sequential([
        keras.Input(SHAPE),
        DefenseGanProjection(g, steps=3, restarts=2, learning_rate=5.0,
                             momentum=0.5, seed=4, name="defense_gan"),
        keras.layers.Flatten(), keras.layers.Dense(3)])
    config = net.get_layer("defense_gan").get_config()
    before, after = save_load_outputs(net, x)
    # Same weights and the saved seed state: the same draws.
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert config["generator"]["class_name"] == "Functional"
    assert {k: config[k] for k in ("steps", "restarts", "learning_rate",
                                   "momentum", "seed")} == {
        "steps": 3, "restarts": 2, "learning_rate": 5.0, "momentum": 0.5,
        "seed": 4}


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"restarts": 2.0}, "restarts must be an int >= 1"),
    ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
    ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
])
def test_bad_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DefenseGanProjection(_generator(), **kwargs)


def test_bad_generator_and_input_raise():
    with pytest.raises(ValueError, match="generator must be a built"):
        DefenseGanProjection(keras.layers.Dense(3))
    with pytest.raises(ValueError, match=r"expects inputs \(batch, 8, 8, 1"):
        DefenseGanProjection(_generator())(np.zeros((1, 8, 8, 3), "float32"))
