"""A small DCGAN generator and discriminator for 28x28 images (Defense-GAN).

Defense-GAN (Samangouei, Kabkab & Chellappa 2018, ICLR, arXiv 1805.06605)
needs a generator `G: z -> image` trained on clean data; `layers.
DefenseGanProjection` projects inputs onto its range. The paper trains a
WGAN (its official code: WGAN-GP, 5 critic steps per generator step, Adam
1e-4 with betas (0.5, 0.9), 200k iterations; MNIST generator: dense to
4x4x256, three 5x5 transposed convs, sigmoid output; critic: three 5x5
stride-2 convs with leaky ReLU; `latent_dim` 128).

Deviation: we train a standard DCGAN (Radford, Metz & Chintala 2016, arXiv
1511.06434: strided (transposed) convolutions, leaky ReLU in the
discriminator, Adam 2e-4 with beta_1 0.5) with the non-saturating loss
(Goodfellow et al. 2014, arXiv 1406.2661, Sec. 3), small enough to train on
a 2-core CPU in minutes (`training.gan.fit_gan`). Unlike Radford et al.
neither network uses batch normalization, so the generator is the same
function in training and inference mode (the projection calls it in
inference mode, and `fit_gan` draws its fakes that way).

Generator: Dense `7 * 7 * 2 * width` + leaky ReLU, reshape to
`(7, 7, 2 * width)`, 4x4 stride-2 transposed conv to `(14, 14, width)` +
leaky ReLU, 4x4 stride-2 transposed conv to `(28, 28, channels)` + sigmoid.
Discriminator: 4x4 stride-2 convs with `width` and `2 * width` filters, each
+ leaky ReLU (slope 0.2), flatten, dense logit.
"""

from __future__ import annotations

import keras

from models._common import check_positive_int

LEAK = 0.2  # leaky ReLU slope (Radford et al. 2016, Sec. 3)


def _check_image_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) \
        else None
    if (shape is None or len(shape) != 3 or shape[0] != shape[1]
            or shape[0] % 4
            or not all(isinstance(s, int) and s > 0 for s in shape)):
        raise ValueError(
            "image_shape must be (size, size, channels) with size a positive "
            f"multiple of 4, e.g. (28, 28, 1); got {image_shape!r}")
    return shape


def dcgan_generator(latent_dim: int = 128,
                    image_shape: tuple[int, int, int] = (28, 28, 1),
                    width: int = 64) -> keras.Model:
    """The DCGAN generator `z -> image` (module doc: layers, deviations).

    Args:
        latent_dim: length of `z` (the paper's 128).
        image_shape: `(size, size, channels)`, size a multiple of 4.
        width: filters of the last hidden layer; the first has `2 * width`.

    Returns:
        A Functional `keras.Model` named "dcgan_generator" mapping float32
        `z` of shape `(batch, latent_dim)` (trained with `z ~ N(0, I)`) to
        float32 images `(batch, height, width, channels)` in `[0, 1]`
        (sigmoid output).

    Raises:
        ValueError: a non-positive `latent_dim` or `width`, or a bad
            `image_shape`.
    """
    check_positive_int(latent_dim, "latent_dim")
    check_positive_int(width, "width")
    size, _, channels = _check_image_shape(image_shape)
    base = size // 4
    z = keras.Input((latent_dim,), name="z")
    x = keras.layers.Dense(base * base * 2 * width, name="project")(z)
    x = keras.layers.LeakyReLU(LEAK, name="project_act")(x)
    x = keras.layers.Reshape((base, base, 2 * width), name="reshape")(x)
    x = keras.layers.Conv2DTranspose(width, 4, strides=2, padding="same",
                                     name="deconv1")(x)
    x = keras.layers.LeakyReLU(LEAK, name="deconv1_act")(x)
    x = keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same",
                                     activation="sigmoid", name="image")(x)
    return keras.Model(z, x, name="dcgan_generator")


def dcgan_discriminator(image_shape: tuple[int, int, int] = (28, 28, 1),
                        width: int = 64) -> keras.Model:
    """The DCGAN discriminator `image -> logit` (module doc).

    Args:
        image_shape: `(size, size, channels)`, size a multiple of 4.
        width: filters of the first conv; the second has `2 * width`.

    Returns:
        A Functional `keras.Model` named "dcgan_discriminator" mapping
        float32 images `(batch, height, width, channels)` in `[0, 1]` to
        float32 logits `(batch, 1)` (positive: judged real).

    Raises:
        ValueError: a non-positive `width` or a bad `image_shape`.
    """
    check_positive_int(width, "width")
    shape = _check_image_shape(image_shape)
    inputs = keras.Input(shape, name="image")
    x = inputs
    for i, filters in enumerate((width, 2 * width), start=1):
        x = keras.layers.Conv2D(filters, 4, strides=2, padding="same",
                                name=f"conv{i}")(x)
        x = keras.layers.LeakyReLU(LEAK, name=f"conv{i}_act")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logit = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, logit, name="dcgan_discriminator")
