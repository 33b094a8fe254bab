"""The contract every registered attack keeps (STYLE B.6), checked in one
table on the closed-form linear model: shape and dtype kept (float32 and
float64), input not mutated, output inside the box and (for fixed-budget
attacks) the eps-ball, eps = 0 is the identity, and bad arguments get a
ValueError that names the value. `ls_pga` needs a thermometer-encoded
network, so its contract is checked in tests/attacks/test_ls_pga.py."""

import keras
import numpy as np
import pytest

import attacks
from tests.attacks.linear_model import LinearSoftmax

LIN = LinearSoftmax(classes=3, seed=3)

# The registry names the issue asks for, exactly.
EXPECTED = {
    "fgsm", "fgm", "rfgsm", "bim", "illc", "mi_fgsm", "pgd", "cw_l2",
    "cw_linf", "cw_l0", "lbfgs", "deepfool", "one_pixel", "apgd_ce",
    "apgd_dlr", "square", "spsa", "trades_kl",
}
# Registered too, but only defined on thermometer-encoded networks.
THERMOMETER_ONLY = {"ls_pga"}

# name -> (norm the eps-ball is measured in, or None for minimum-norm
# attacks without an eps, and the small-budget kwargs used here).
EPS = 0.05
FIXED = {
    "fgsm": ("inf", dict(eps=EPS)),
    "fgm": ("2", dict(eps=EPS)),
    "rfgsm": ("inf", dict(eps=EPS, seed=0)),
    "bim": ("inf", dict(eps=EPS, step_size=0.01, steps=5)),
    "illc": ("inf", dict(eps=EPS)),
    "mi_fgsm": ("inf", dict(eps=EPS, steps=5)),
    "pgd": ("inf", dict(eps=EPS, step_size=0.01, steps=5, seed=0)),
    "apgd_ce": ("inf", dict(eps=EPS, steps=10, seed=0)),
    "apgd_dlr": ("inf", dict(eps=EPS, steps=10, seed=0)),
    "square": ("inf", dict(eps=EPS, steps=30, seed=0)),
    "spsa": ("inf", dict(eps=EPS, steps=5, samples=16, seed=0)),
    "trades_kl": ("inf", dict(eps=EPS, step_size=0.01, steps=5, seed=0)),
}
MIN_NORM = {
    "cw_l2": dict(binary_search_steps=2, steps=10),
    "cw_linf": dict(steps=10, max_rounds=10),
    "cw_l0": dict(steps=10, max_rounds=5),
    "lbfgs": dict(binary_search_steps=2, steps=10),
    "deepfool": dict(steps=10, num_classes=3),
    "one_pixel": dict(popsize=8, steps=3, seed=0),
}


def test_registry_holds_exactly_the_named_attacks():
    assert set(attacks.list_attacks()) == EXPECTED | THERMOMETER_ONLY
    assert set(FIXED) | set(MIN_NORM) == EXPECTED
    for name in EXPECTED | THERMOMETER_ONLY:
        assert attacks.get_attack(name) is getattr(attacks, name)


def _kwargs(name):
    return FIXED[name][1] if name in FIXED else MIN_NORM[name]


# JAX computes in float32 unless jax_enable_x64 is set: float64 inputs are
# a TensorFlow-backend case.
DTYPES = ["float32", "float64"] if keras.backend.backend() == "tensorflow" \
    else ["float32"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shape_dtype_box_bound_and_no_mutation(name, dtype):
    x, y = LIN.inputs(6)
    x = x.astype(dtype)
    before = x.copy()
    out = attacks.get_attack(name)(LIN, x, y, **_kwargs(name))
    x_adv = np.asarray(out)
    assert out.dtype == dtype and x_adv.shape == x.shape
    np.testing.assert_array_equal(x, before)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    if name in FIXED:
        delta = (x_adv - x).reshape(len(x), -1)
        norm = FIXED[name][0]
        size = (np.abs(delta).max(1) if norm == "inf"
                else np.linalg.norm(delta, axis=1))
        assert size.max() <= EPS + 1e-6, size.max()


@pytest.mark.parametrize("name", sorted(FIXED))
def test_eps_zero_is_the_identity(name):
    x, y = LIN.inputs(6)
    kwargs = {**_kwargs(name), "eps": 0.0}
    if name == "bim":  # step_size must be > 0; eps = 0 still pins x
        kwargs["step_size"] = 0.01
    np.testing.assert_array_equal(
        np.asarray(attacks.get_attack(name)(LIN, x, y, **kwargs)), x)


NORMED = sorted(n for n in EXPECTED if "norm" in
                __import__("inspect").signature(
                    attacks.get_attack(n)).parameters
                or n == "bim")


@pytest.mark.parametrize("name", NORMED)
def test_norm_linf_is_refused_with_the_accepted_values(name):
    x, y = LIN.inputs(2)
    with pytest.raises(ValueError, match=r"norm.*'linf'") as e:
        attacks.get_attack(name)(LIN, x, y, **{**_kwargs(name),
                                               "norm": "linf"})
    assert "inf" in str(e.value) and "2" in str(e.value)


@pytest.mark.parametrize("name", ["fgsm", "fgm"])
def test_single_step_attacks_refuse_a_norm(name):
    x, y = LIN.inputs(2)
    with pytest.raises(ValueError, match="norm is fixed"):
        attacks.get_attack(name)(LIN, x, y, eps=0.1, norm="inf")


@pytest.mark.parametrize("name", sorted(FIXED))
def test_negative_eps_is_refused(name):
    x, y = LIN.inputs(2)
    with pytest.raises(ValueError, match="eps"):
        attacks.get_attack(name)(LIN, x, y, **{**_kwargs(name), "eps": -0.1})


@pytest.mark.parametrize("name", sorted(
    n for n in EXPECTED if n not in ("fgsm", "fgm", "rfgsm")))
def test_zero_steps_is_refused(name):
    x, y = LIN.inputs(2)
    with pytest.raises(ValueError, match="steps"):
        attacks.get_attack(name)(LIN, x, y, **{**_kwargs(name), "steps": 0})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_x_outside_the_box_is_refused(name):
    x, y = LIN.inputs(2)
    x[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"clip_min|\[0"):
        attacks.get_attack(name)(LIN, x, y, **_kwargs(name))


TARGETED = sorted(n for n in EXPECTED if "targeted" in
                  __import__("inspect").signature(
                      attacks.get_attack(n)).parameters
                  or n in ("fgsm", "fgm", "bim"))


@pytest.mark.parametrize("name", TARGETED)
def test_targeted_without_target_labels_is_refused(name):
    """A targeted attack with `y=None` must not silently target the model's
    own prediction (a no-op attack)."""
    x, _ = LIN.inputs(2)
    with pytest.raises(ValueError, match="targeted=True needs the target"):
        attacks.get_attack(name)(LIN, x, None, **{**_kwargs(name),
                                                  "targeted": True})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_empty_box_is_refused(name):
    x, y = LIN.inputs(2)
    with pytest.raises(ValueError, match="clip_min must be < clip_max"):
        attacks.get_attack(name)(LIN, x, y, **{**_kwargs(name),
                                               "clip_min": 1.0,
                                               "clip_max": 0.0})


def _compiled(fn):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    import jax

    return jax.jit(fn)


@pytest.mark.parametrize("name", ["square", "spsa"])
def test_host_loop_attacks_refuse_tracing_with_one_clear_error(name):
    x, y = LIN.inputs(4)
    fn = attacks.get_attack(name)
    graph = _compiled(lambda a, b: fn(LIN, a, b, **_kwargs(name)))
    with pytest.raises(ValueError, match=f"{name} runs its outer loop on "
                       "the host"):
        graph(x, y)


@pytest.mark.parametrize("name", sorted(EXPECTED - attacks.EAGER_ONLY))
def test_graph_attacks_trace_into_a_compiled_function(name):
    """All but `attacks.EAGER_ONLY` run inside a `tf.function` / `jax.jit`
    (as in a training step) and keep the box."""
    x, y = LIN.inputs(4)
    fn = attacks.get_attack(name)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        graph = tf.function(lambda a, b: fn(LIN, a, b, **_kwargs(name)))
    else:
        import jax

        graph = jax.jit(lambda a, b: fn(LIN, a, b, **_kwargs(name)))
    out = np.asarray(graph(x, y))
    assert out.shape == x.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
