"""Defense-GAN's projection of inputs onto a generator's range."""

import math
import numbers

import keras
from keras import ops

from core import backends

DECAY = 0.1  # official code: the step size drops x0.1 ...
DECAY_AT = 0.8  # ... after ceil(0.8 * steps) steps


def _check_generator(generator):
    """`(latent_dim, (height, width, channels))` of a generator model."""
    try:
        z_shape = tuple(generator.input_shape)
        x_shape = tuple(generator.output_shape)
    except (AttributeError, ValueError, TypeError):
        z_shape = x_shape = None
    if (not isinstance(generator, keras.Model) or z_shape is None
            or len(z_shape) != 2 or not isinstance(z_shape[1], int)
            or len(x_shape) != 4 or None in x_shape[1:]):
        raise ValueError(
            "generator must be a built keras.Model mapping z (batch, "
            "latent_dim) to images (batch, height, width, channels); got "
            f"{generator!r}")
    return z_shape[1], x_shape[1:]


def _check_count(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an int >= 1; got {value!r}")


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@keras.saving.register_keras_serializable(package="robust_recipes")
class DefenseGanProjection(keras.layers.Layer):
    """Replaces each input image by its closest image in a generator's range.

    For every input `x` the layer draws `restarts` codes `z_0 ~ N(0, I)`,
    runs `steps` steps of gradient descent (with momentum) on the
    reconstruction error `mean((G(z) - x)^2)` with respect to `z`, and
    outputs `G(z*)`, the final image of the restart with the smallest
    error (Samangouei et al. 2018, Sec. 3.3, Fig. 2 and Algorithm 1: L
    steps, R random restarts). The error is the paper's `||G(z) - x||_2^2`
    divided by the number of pixels, as in the official code, whose
    settings are the defaults here: step size 10, momentum 0.7 (plain
    gradient descent: `momentum=0`), the step size multiplied by 0.1 after
    `ceil(0.8 * steps)` steps. The paper writes `z_0 ~ N(0, I)`, the prior
    the generator was trained with; the official code starts from
    `N(0, I / latent_dim)`. Each image's restarts are independent: the
    `batch * restarts` codes descend together, the gradient of the summed
    errors giving each code its own error's gradient.

    The generator is called in inference mode and frozen
    (`generator.trainable = False` is set on the model passed in): Defense-
    GAN keeps it fixed. The layer's weights are the generator's plus the
    state of its `keras.random.SeedGenerator`.

    Threat model: `randomized = True` (the restarts' starts are random at
    every call, at inference too), so robust accuracy needs EOT;
    `differentiable = False`: the output is the result of an inner
    optimization, stopped here (`stop_gradient`, no gradient reaches the
    input), and is attacked with BPDA and the identity, as Athalye,
    Carlini & Wagner 2018 (arXiv 1802.00420, Sec. 5.4.1) do (`attacks.
    bpda.with_straight_through` wraps this layer so).

    Gradients with respect to `z` come from `core.backends.value_and_grad`
    inside `keras.ops.fori_loop`, so the layer runs eagerly and compiled
    (`tf.function`, `jax.jit`, `Model.predict`) on both backends. Cost:
    `steps * restarts` forward and backward passes of the generator per
    image (2000 at the paper's settings).

    Args:
        generator: a built `keras.Model` mapping float32 `z` `(batch,
            latent_dim)` to images `(batch, height, width, channels)` in
            `[0, 1]` (e.g. `models.dcgan.dcgan_generator`, trained by
            `training.gan.fit_gan`); `latent_dim` is read from its input.
        steps: int >= 1, gradient-descent steps L (paper: 200 for MNIST and
            F-MNIST).
        restarts: int >= 1, random restarts R (paper: 10).
        learning_rate: float > 0, step size on the mean squared error
            (official code's MNIST / F-MNIST config: 10.0).
        momentum: float in `[0, 1)` (official code: 0.7).
        seed: int or None, seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: forwarded to `keras.layers.Layer` (`name`, `dtype`, ...).

    Call arguments:
        inputs: float32 tensor `(batch, height, width, channels)` with the
            generator's image shape, pixels in `[0, 1]`.

    Returns:
        float32 tensor of the input's shape, values in the generator's
        output range (`[0, 1]` for a sigmoid output), without gradient.

    Raises:
        ValueError: a `generator` that is not a built `keras.Model` from
            `(batch, latent_dim)` to rank-4 images; a bad `steps`,
            `restarts`, `learning_rate` or `momentum` (the message names
            the value and the accepted range); when built on an input
            whose `(height, width, channels)` differ from the generator's.

    Example:
        >>> generator, _ = training.gan.fit_gan(x_train, epochs=2)
        >>> net = keras.Sequential([keras.Input((28, 28, 1)),
        ...                         DefenseGanProjection(generator, seed=0),
        ...                         classifier])
        >>> net.save("defense_gan.keras")

    References:
        Samangouei, Kabkab, Chellappa 2018, "Defense-GAN: Protecting
        Classifiers Against Adversarial Attacks Using Generative Models",
        ICLR, arXiv 1805.06605, Sec. 3.3 (projection by L steps of GD with
        R random restarts), Sec. 4 (L = 200, R = 10 for MNIST / F-MNIST);
        official code github.com/kabkabm/defensegan (experiments/cfgs/gans/
        mnist.yml and fmnist.yml: REC_ITERS 200, REC_RR 10, REC_LR 10.0;
        models/gan.py `reconstruct`: momentum 0.7, step decay).
        Athalye, Carlini, Wagner 2018, arXiv 1802.00420, Sec. 5.4.1 (BPDA
        attack on Defense-GAN).
    """

    differentiable = False
    randomized = True

    def __init__(self, generator, steps=200, restarts=10, learning_rate=10.0,
                 momentum=0.7, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.image_shape = _check_generator(generator)
        _check_count(steps, "steps")
        _check_count(restarts, "restarts")
        if not (_is_real(learning_rate) and 0 < learning_rate < math.inf):
            raise ValueError(
                f"learning_rate must be a finite number > 0; got "
                f"{learning_rate!r}")
        if not (_is_real(momentum) and 0 <= momentum < 1):
            raise ValueError(
                f"momentum must be a number in [0, 1); got {momentum!r}")
        generator.trainable = False
        self.generator = generator
        self.steps = steps
        self.restarts = restarts
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if tuple(input_shape[1:]) != self.image_shape:
            raise ValueError(
                f"DefenseGanProjection expects inputs (batch, "
                f"{', '.join(map(str, self.image_shape))}) like its "
                f"generator's images; got shape {tuple(input_shape)}")

    def descend(self, inputs):
        """Every restart's final reconstruction and error (what `call`
        chooses from; one draw of starting codes from the seed generator).

        Args:
            inputs: float tensor `(batch, height, width, channels)`.

        Returns:
            `(images, errors)`: float32 `(batch, restarts, height, width,
            channels)` with `images[i, r] = G(z_L)` of restart `r` of
            image `i`, and float32 `(batch, restarts)`, their mean squared
            errors to `inputs[i]`.
        """
        x = ops.repeat(ops.cast(inputs, "float32"), self.restarts, axis=0)
        z = keras.random.normal((ops.shape(x)[0], self.latent_dim),
                                seed=self.seed_generator)

        def errors(z):
            images = self.generator(z, training=False)
            return ops.mean(ops.square(images - x), axis=(1, 2, 3)), images

        def objective(z):
            err, _ = errors(z)
            return ops.sum(err), err

        decay_at = math.ceil(DECAY_AT * self.steps)

        def step(i, carry):
            z, velocity = carry
            _, _, grad = backends.value_and_grad(objective, z)
            lr = ops.where(i < decay_at, self.learning_rate,
                           DECAY * self.learning_rate)
            # tf.train.MomentumOptimizer's update, as the official code.
            velocity = self.momentum * velocity + grad
            return z - lr * velocity, velocity

        z, _ = ops.fori_loop(0, self.steps, step, (z, ops.zeros_like(z)))
        err, images = errors(z)
        return (ops.reshape(images, (-1, self.restarts) + self.image_shape),
                ops.reshape(err, (-1, self.restarts)))

    def call(self, inputs):
        images, err = self.descend(ops.stop_gradient(inputs))
        best = ops.one_hot(ops.argmin(err, axis=1), self.restarts)
        # Exact selection: one 1 and zeros per row.
        out = ops.sum(images * best[:, :, None, None, None], axis=1)
        return ops.stop_gradient(ops.cast(out, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "generator": keras.saving.serialize_keras_object(self.generator),
            "steps": self.steps,
            "restarts": self.restarts,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "seed": self.seed,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["generator"] = keras.saving.deserialize_keras_object(
            config["generator"])
        return cls(**config)
