"""The backend-specific core of robust-recipes: one small module per Keras
backend, chosen by `keras.backend.backend()` when this package is imported.

Everything else in the project (layers, models, attacks, trainers, the
numeric parts of evaluation) is written with `keras.ops` and
`keras.random` and calls, for the few things `keras.ops` cannot express,
the functions re-exported here:

- `value_and_grad(fn, x)`: the gradient with respect to the INPUT of a
  scalar objective (the core of every gradient attack);
- `gradients(loss_fn, variables, tensors)`: gradients with respect to
  variables and input tensors, for training steps written in stateful
  style (TRADES, free AT);
- `prepared_train_step(model, args, prepare, parent_step)`: Keras's own
  train step on a batch that `prepare` crafts (adversarial training);
- `compile_fn(fn, ...)`: compilation of an attack loop (`tf.function` /
  `jax.jit`), with the model's weights read live, never baked in;
- `train_step(model, args, step_fn)`: runs a stateful-style training step
  inside the backend's own `Model.train_step` calling convention (TF:
  `train_step(data)` on live variables; JAX: the pure
  `train_step(state, data) -> (logs, state)` of Keras's JAX trainer);
- `stateless_uniform` / `stateless_normal`: random draws keyed by an
  explicit seed pair (a counter-based seed that `keras.random` does not
  take as a tensor);
- `unseeded_uniform` / `unseeded_normal`: draws for `seed=None` (TF's
  stateful global generator, which works inside `tf.function` where
  `keras.random`'s lazily created global generator does not; Keras's
  global generator under JAX, eager only);
- `get_strategy(name, tpu)`, `is_chief`, `worker_id`: the multi-device
  path (`tf.distribute` under TensorFlow, `keras.distribution.DataParallel`
  under JAX), chosen by training.distribute;
- `fori_loop(model, lower, upper, body, init)` / `while_loop(model, cond,
  body, loop_vars)`: `keras.ops`'s loops for a body that calls `model`
  (JAX carries the model's non-trainable state, such as a random layer's
  seed, through the loop instead of leaking it);
- `is_traced(x)`: whether `x` is a symbolic value (inside `tf.function` /
  `jax.jit`) whose values cannot be read.

The split follows Keras 3's own trainers (keras/src/backend/tensorflow/
trainer.py and keras/src/backend/jax/trainer.py): TensorFlow records
gradients on a tape and mutates variables; JAX differentiates pure
functions of the variables' values, which a `keras.StatelessScope` maps
onto the variables while stateful-looking code runs.

Only `core/backends/tensorflow.py` imports TensorFlow and only
`core/backends/jax.py` imports JAX.
"""

from __future__ import annotations

import keras

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    from core.backends.tensorflow import (compile_fn, fori_loop,
                                          get_strategy, while_loop,
                                          gradients, is_chief, is_traced,
                                          prepared_train_step,
                                          stateless_normal,
                                          stateless_uniform, train_step,
                                          unseeded_normal, unseeded_uniform,
                                          value_and_grad, worker_id)
elif BACKEND == "jax":
    from core.backends.jax import (compile_fn, fori_loop, get_strategy,
                                   gradients, while_loop,
                                   is_chief, is_traced,
                                   prepared_train_step, stateless_normal,
                                   stateless_uniform, train_step,
                                   unseeded_normal, unseeded_uniform,
                                   value_and_grad, worker_id)
else:
    raise ImportError(
        f"robust-recipes runs on the Keras backends 'tensorflow' and 'jax'; "
        f"got KERAS_BACKEND={BACKEND!r}")

__all__ = ["BACKEND", "compile_fn", "fori_loop", "get_strategy",
           "gradients", "while_loop",
           "is_chief", "is_traced", "worker_id",
           "prepared_train_step", "stateless_normal", "stateless_uniform",
           "train_step", "unseeded_normal", "unseeded_uniform",
           "value_and_grad"]
