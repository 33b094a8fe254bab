"""The JAX half of `core.backends` (see its module doc for the contract of
each function).

JAX differentiates and compiles pure functions. Keras 3 bridges its
stateful objects (variables, optimizers, metrics, seed generators) to that
with `keras.StatelessScope`: inside one, a variable reads the value the
scope maps it to, and an assignment only records the new value in the
scope (keras/src/backend/jax/trainer.py builds its `train_step(state,
data)` the same way). Here:

- `compile_fn` passes the model's variables to `jax.jit` as arguments
  (never baking the weights into the compiled code), maps them in a scope,
  and writes back what the call changed (e.g. a random layer's seed state);
- `train_step` maps Keras's JAX trainer state onto the trainer's variables,
  runs a stateful-style step and returns the new state;
- `gradients` differentiates a stateful-style loss with respect to
  variables by mapping them to traced values in a nested scope, carrying
  the other updates (BatchNorm statistics, metrics) out through `aux`.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import keras

# The scopes opened here, innermost last, each with the variables it maps:
# a nested scope starts from a copy of the enclosing one (a StatelessScope
# does not fall back to its parent).
_SCOPES: list[tuple[keras.StatelessScope, list]] = []


class _Scope:
    """A `keras.StatelessScope` mapping `pairs` of (variable, value) on top
    of the enclosing scope opened here, registered in `_SCOPES`."""

    def __init__(self, pairs):
        self.scope = keras.StatelessScope()
        self.variables = []
        if _SCOPES:
            self.scope.state_mapping.update(_SCOPES[-1][0].state_mapping)
            self.variables = list(_SCOPES[-1][1])
        for variable, value in pairs:
            if id(variable) not in self.scope.state_mapping:
                self.variables.append(variable)
            self.scope.state_mapping[id(variable)] = value

    def __enter__(self):
        self.scope.__enter__()
        _SCOPES.append((self.scope, self.variables))
        return self.scope

    def __exit__(self, *exc):
        _SCOPES.pop()
        return self.scope.__exit__(*exc)


def value_and_grad(fn: Callable[[Any], tuple[Any, Any]], x: Any
                   ) -> tuple[Any, Any, Any]:
    """`(objective, aux, d objective / d x)` for `fn(x) -> (scalar
    objective, aux)` (`jax.value_and_grad` with `has_aux`). A layer
    without a gradient (a rounding, a lookup) gives zeros here, not an
    error: attack such models through `attacks.bpda`."""
    (objective, aux), grad = jax.value_and_grad(fn, has_aux=True)(
        jnp.asarray(x))
    return objective, aux, grad


def _changed(scope, variables, before) -> dict:
    """Variables (by index) whose value in `scope` is no longer the one it
    had at `before` (what a call assigned)."""
    return {str(i): scope.state_mapping[id(v)]
            for i, v in enumerate(variables)
            if scope.state_mapping.get(id(v)) is not before[i]}


def _write_back(variables, changed: dict) -> None:
    for i, value in changed.items():
        variables[int(i)].assign(value)


def gradients(loss_fn: Callable[..., tuple[Any, Any]],
              variables: Sequence[Any], tensors: Sequence[Any] = ()
              ) -> tuple[Any, Any, list, list]:
    """`(loss, aux, grads of variables, grads of tensors)` for a
    stateful-style `loss_fn(*tensors) -> (scalar loss, aux)`. The variables
    are mapped to traced values; every other variable that `loss_fn`
    assigns (BatchNorm statistics, metrics) is updated after the
    differentiation, as on TensorFlow."""
    variables = list(variables)
    skip = {id(v) for v in variables}
    others = [v for v in (_SCOPES[-1][1] if _SCOPES else [])
              if id(v) not in skip]

    def pure(values, args):
        with _Scope(zip(variables, values)) as scope:
            before = [scope.state_mapping.get(id(v)) for v in others]
            loss, aux = loss_fn(*args)
            changed = _changed(scope, others, before)
        return loss, (aux, changed)

    values = [v.value for v in variables]
    (loss, (aux, changed)), (g_vars, g_tensors) = jax.value_and_grad(
        pure, argnums=(0, 1), has_aux=True)(values, [jnp.asarray(t)
                                                     for t in tensors])
    _write_back(others, changed)
    return loss, aux, list(g_vars), list(g_tensors)


def _model_variables(model: Any) -> list | None:
    """The variables of a Keras model, or of the models inside an attack
    wrapper (EOT, BPDA, adaptive: their `wrapped` and `surrogate`); None
    for a callable without any."""
    if isinstance(model, keras.layers.Layer):
        return list(model.variables)
    found, seen = [], set()
    for part in (getattr(model, "wrapped", None),
                 getattr(model, "surrogate", None)):
        for v in (_model_variables(part) if part is not None else None) or []:
            if id(v) not in seen:
                seen.add(id(v))
                found.append(v)
    return found or None


def compile_fn(fn: Callable, *, jit_compile: bool = False,
               static_argnames: Sequence[str] = ()) -> Callable:
    """`fn(model, *arrays, **static)` under `jax.jit`, with the model's
    variables passed as arguments (so new weights never need a retrace and
    are never stale) and the static keyword arguments `static_argnames`
    (strings, bools, ints that shape the computation). A model that is not
    a Keras layer is traced with its current weights as constants, once
    per call. `jit_compile` is accepted for the TensorFlow signature; JAX
    always compiles with XLA."""
    del jit_compile
    static = tuple(static_argnames)

    def pure(state, model, *args, **kwargs):
        variables = _model_variables(model)
        with _Scope(zip(variables, state)) as scope:
            before = [scope.state_mapping.get(id(v)) for v in variables]
            out = fn(model, *args, **kwargs)
            changed = _changed(scope, variables, before)
        return out, changed

    jitted = jax.jit(pure, static_argnums=(1,), static_argnames=static)

    @functools.wraps(fn)
    def call(model, *args, **kwargs):
        variables = _model_variables(model)
        if variables is None:
            return jax.jit(functools.partial(fn, model),
                           static_argnames=static)(*args, **kwargs)
        out, changed = jitted([v.value for v in variables], model, *args,
                              **kwargs)
        _write_back(variables, changed)
        return out

    return call


def _state_groups(model: Any, state: tuple) -> list:
    optimizer = getattr(model, "optimizer", None)
    groups = [model.trainable_variables, model.non_trainable_variables,
              optimizer.variables if optimizer is not None else [],
              model.metrics_variables]
    return [list(g) for g in groups][:len(state)]


def train_step(model: Any, args: tuple, step_fn: Callable[[Any], dict]
               ) -> tuple[dict, tuple]:
    """Keras's JAX `train_step(state, data) -> (logs, state)` for a
    stateful-style `step_fn(data) -> logs`: the state is mapped onto the
    model's (trainable, non-trainable, optimizer, metrics) variables while
    `step_fn` runs, and the values it leaves are the new state."""
    state, data = args
    groups = _state_groups(model, state)
    pairs = [(v, s) for vs, ss in zip(groups, state) if ss is not None
             for v, s in zip(vs, ss)]
    with _Scope(pairs) as scope:
        logs = step_fn(data)
    new_state = tuple(
        None if ss is None else [scope.state_mapping[id(v)] for v in vs]
        for vs, ss in zip(groups, state))
    return logs, new_state + tuple(state[len(new_state):])


def prepared_train_step(model: Any, args: tuple, prepare: Callable,
                        parent_step: Callable) -> tuple[dict, tuple]:
    """Keras's own JAX step (`parent_step(state, batch)`) on the batch that
    `prepare(data)` crafts with the state's weights and optimizer
    variables (`optimizer.iterations`); the non-trainable state `prepare`
    changes (seed generators) is kept."""
    state, data = args
    trainable, non_trainable = state[0], state[1]
    groups = _state_groups(model, state)
    pairs = [(v, s) for vs, ss in zip(groups[:3], state[:3])
             if ss is not None for v, s in zip(vs, ss)]
    with _Scope(pairs) as scope:
        batch = prepare(data)
    non_trainable = [scope.state_mapping[id(v)]
                     for v in model.non_trainable_variables]
    return parent_step((trainable, non_trainable, *state[2:]), batch)


def _loop_state(model: Any) -> list:
    """The model's variables that a call may assign (non-trainable:
    BatchNorm statistics, a random layer's seed state)."""
    return [v for v in _model_variables(model) or [] if not v.trainable]


def _carry_state(state_vars: list, body: Callable) -> Callable:
    """`body(inner) -> inner` as a pure step `(inner, values) -> (inner,
    values)` that maps `state_vars` to `values` while `body` runs."""

    def step(inner, values):
        with _Scope(zip(state_vars, values)) as scope:
            inner = body(inner)
            values = [scope.state_mapping[id(v)] for v in state_vars]
        return inner, values

    return step


def fori_loop(model: Any, lower: Any, upper: Any, body: Callable,
              init: Any) -> Any:
    """`keras.ops.fori_loop(lower, upper, body, init)` where `body` may
    call `model`: the model's non-trainable variables (a random layer's
    seed state) travel in the loop carry, so a value assigned inside the
    loop never escapes it as a tracer, and their final values are assigned
    after the loop, as a `tf.while_loop` would leave them."""
    state_vars = _loop_state(model)
    if not state_vars:
        return keras.ops.fori_loop(lower, upper, body, init)

    def step(i, carry):
        return _carry_state(state_vars, lambda inner: body(i, inner))(*carry)

    out, values = keras.ops.fori_loop(lower, upper, step,
                                      (init, [v.value for v in state_vars]))
    _assign(state_vars, values)
    return out


def while_loop(model: Any, cond: Callable, body: Callable,
               loop_vars: Any) -> Any:
    """`keras.ops.while_loop(cond, body, loop_vars)` where `body` may call
    `model` (see `fori_loop`); `cond` must not assign variables."""
    state_vars = _loop_state(model)
    if not state_vars:
        return keras.ops.while_loop(cond, body, loop_vars)
    is_tuple = isinstance(loop_vars, (tuple, list))
    start = tuple(loop_vars) if is_tuple else (loop_vars,)

    def run(inner):
        out = body(*inner)
        return tuple(out) if is_tuple else (out,)

    out, values = keras.ops.while_loop(
        lambda inner, values: cond(*inner), _carry_state(state_vars, run),
        (start, [v.value for v in state_vars]))
    _assign(state_vars, values)
    return tuple(out) if is_tuple else out[0]


def _assign(variables: list, values: list) -> None:
    for variable, value in zip(variables, values):
        variable.assign(value)


def _key(seed: Any) -> Any:
    return jnp.asarray(seed).astype(jnp.uint32).reshape((2,))


def stateless_uniform(shape: Any, seed: Any, minval: Any = 0.0,
                      maxval: Any = 1.0, dtype: str = "float32") -> Any:
    """Uniform draws in `[minval, maxval)` keyed by `seed`, a pair of ints
    (Python or an int array of shape (2,)); integer dtypes draw integers.
    """
    shape = tuple(int(s) for s in shape)
    if jnp.issubdtype(jnp.dtype(dtype), jnp.integer):
        return jax.random.randint(_key(seed), shape, minval, maxval,
                                  dtype=dtype)
    return jax.random.uniform(_key(seed), shape, dtype, minval, maxval)


def stateless_normal(shape: Any, seed: Any, dtype: str = "float32") -> Any:
    """Standard normal draws keyed by the seed pair `seed`."""
    return jax.random.normal(_key(seed), tuple(int(s) for s in shape),
                             dtype)


def unseeded_uniform(shape: Any, minval: Any = 0.0, maxval: Any = 1.0,
                     dtype: str = "float32") -> Any:
    """Uniform draws from Keras's global seed generator (eager only: inside
    `jax.jit` Keras asks for an explicit seed)."""
    if jnp.issubdtype(jnp.dtype(dtype), jnp.integer):
        return keras.random.randint(shape, minval, maxval, dtype)
    return keras.random.uniform(shape, minval, maxval, dtype)


def unseeded_normal(shape: Any, dtype: str = "float32") -> Any:
    """Standard normal draws from Keras's global seed generator (eager
    only)."""
    return keras.random.normal(shape, dtype=dtype)


def is_traced(x: Any = None) -> bool:
    """True when `x` is a JAX tracer (inside `jax.jit` / `grad`), whose
    values cannot be read."""
    return isinstance(x, jax.core.Tracer)


# -- multi-device: keras.distribution.DataParallel --------------------------


class DataParallelStrategy:
    """The JAX counterpart of a `tf.distribute` strategy, reduced to what
    train.py / evaluate.py use: `scope()` (a no-op: Keras's JAX trainer
    shards through the global `keras.distribution`),
    `num_replicas_in_sync` and `cluster_resolver` (None: one process).

    Args:
        devices: the JAX devices; more than one sets
            `keras.distribution.DataParallel(devices=...)` globally, so
            `fit()` splits each global batch across them.
    """

    cluster_resolver = None

    def __init__(self, devices: Sequence[Any]):
        self.devices = list(devices)
        self.num_replicas_in_sync = len(self.devices)
        if len(self.devices) > 1:
            keras.distribution.set_distribution(
                keras.distribution.DataParallel(devices=self.devices))

    def scope(self):
        return contextlib.nullcontext()


def get_strategy(name: str = "auto", tpu: str | None = None
                 ) -> DataParallelStrategy:
    """A `DataParallelStrategy` for `name` (training.distribute documents
    the names): "one_device" uses the first accelerator (else CPU);
    "auto" and "mirrored" use every local device of the default platform.

    Raises:
        ValueError: "multi_worker" or "tpu" (TensorFlow strategies).
    """
    del tpu
    if name in ("multi_worker", "tpu"):
        raise ValueError(
            f"--strategy={name} is a tf.distribute strategy; under "
            "KERAS_BACKEND=jax choose one of ('auto', 'one_device', "
            "'mirrored')")
    devices = jax.devices()
    if name == "one_device":
        devices = devices[:1]
    return DataParallelStrategy(devices)


def is_chief(strategy: Any) -> bool:
    """True: a JAX run here is one process."""
    del strategy
    return True


def worker_id(strategy: Any) -> str:
    """"chief" (one process)."""
    del strategy
    return "chief"
