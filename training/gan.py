"""GAN training for Defense-GAN's generator (Samangouei, Kabkab & Chellappa
2018, ICLR, arXiv 1805.06605, Sec. 3: the generator is trained on clean
images only; the classifier is trained separately).

`fit_gan` trains `models.dcgan`'s generator and discriminator with the
non-saturating GAN loss (Goodfellow et al. 2014, arXiv 1406.2661, Sec. 3)
and DCGAN's Adam settings (Radford, Metz & Chintala 2016, arXiv 1511.06434,
Sec. 4: learning rate 2e-4, beta_1 0.5, minibatch 128; we use 64). The
paper's WGAN (official code: WGAN-GP, 5 critic steps per generator step) is
replaced by this cheaper DCGAN so that training fits a 2-core CPU; see
`models.dcgan`.

The loop is Keras's classic two-model pattern, backend-agnostic (TensorFlow
and JAX) with public API only: per minibatch,
1. the discriminator takes one `train_on_batch` step on the real images
   (label 1) and the generator's images of fresh `z ~ N(0, I)` (label 0),
   binary cross-entropy on logits (its loss `d_loss` is the mean over both
   halves);
2. the generator takes one `train_on_batch` step through the combined
   model `z -> D(G(z))` with the discriminator frozen, label 1, i.e. the
   non-saturating loss `g_loss = -log sigmoid(D(G(z)))`.
Keras 3 reads a model's trainable variables when a step runs, not at
`compile()` (TensorFlow: when the train function is traced; JAX: at every
step), so the discriminator's `trainable` flag is set before each of the
two calls (True, then False): each model always trains the same variables
with its own optimizer.
"""

from __future__ import annotations

import keras
import numpy as np

from models.dcgan import dcgan_discriminator, dcgan_generator


def _check(images, epochs, batch_size, learning_rate, beta_1) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4 \
            or images.dtype != np.float32:
        raise ValueError(
            "images must be a float32 numpy array (N, height, width, "
            f"channels); got {type(images).__name__} "
            f"{getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}")
    lo, hi = (float(images.min()), float(images.max())) if images.size \
        else (0.0, 0.0)
    if not (0.0 <= lo and hi <= 1.0):
        raise ValueError(
            f"images must lie in [0, 1]; got values in [{lo}, {hi}]")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(
                value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if len(images) < batch_size:
        raise ValueError(
            f"need at least batch_size={batch_size} images (incomplete "
            f"batches are dropped); got {len(images)}")
    if not 0 < learning_rate < np.inf:
        raise ValueError("learning_rate must be a finite number > 0; got "
                         f"{learning_rate!r}")
    if not 0 <= beta_1 < 1:
        raise ValueError(f"beta_1 must be in [0, 1); got {beta_1!r}")


def _models(image_shape, latent_dim, width, learning_rate, beta_1):
    """`(generator, discriminator, combined)`, the last two compiled."""
    generator = dcgan_generator(latent_dim, image_shape, width)
    discriminator = dcgan_discriminator(image_shape, width)
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    discriminator.compile(
        optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1),
        loss=loss)
    z = keras.Input((latent_dim,), name="z")
    combined = keras.Model(z, discriminator(generator(z)), name="gan")
    discriminator.trainable = False
    combined.compile(
        optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1),
        loss=loss)
    return generator, discriminator, combined


def _step(real, rng, generator, discriminator, combined, latent_dim):
    """One discriminator step then one generator step; `(d_loss, g_loss)`."""
    batch = len(real)
    z = rng.standard_normal((batch, latent_dim)).astype("float32")
    fake = keras.ops.convert_to_numpy(generator.predict_on_batch(z))
    labels = np.concatenate([np.ones((batch, 1)), np.zeros((batch, 1))])
    discriminator.trainable = True
    d_loss = discriminator.train_on_batch(
        np.concatenate([real, fake]), labels.astype("float32"))
    discriminator.trainable = False
    z = rng.standard_normal((batch, latent_dim)).astype("float32")
    g_loss = combined.train_on_batch(z, np.ones((batch, 1), "float32"))
    return float(d_loss), float(g_loss)


def fit_gan(images: np.ndarray, *, latent_dim: int = 128, epochs: int,
            batch_size: int = 64, learning_rate: float = 2e-4,
            beta_1: float = 0.5, width: int = 64, seed: int = 0,
            verbose: int = 1) -> tuple[keras.Model, dict[str, list[float]]]:
    """Trains a DCGAN on `images` and returns its generator.

    Each epoch visits the images once in a new random order, in
    `len(images) // batch_size` minibatches (the incomplete last batch is
    dropped), one discriminator and one generator step each (module doc).

    Cost, measured on a shared 2-core CPU (TensorFlow, OMP_NUM_THREADS=2,
    batch 64): ~0.35 s per step at `width=32`, ~1.1 s at `width=64`
    (JAX on CPU: ~0.45 s and ~3.4 s). 500 steps at `width=32` (2 epochs of
    16,000 Fashion-MNIST images, ~3 min) gave blurry blob samples, not yet
    recognizable items, though projecting test items onto that generator's
    range (L = 200, R = 10) already gave recognizable shoes, sweaters and
    trousers: train longer for sample quality.

    Args:
        images: float32 numpy array `(N, height, width, channels)` in
            `[0, 1]`, height == width a multiple of 4 (Fashion-MNIST:
            `(N, 28, 28, 1)`), N >= `batch_size`.
        latent_dim: length of `z` (Defense-GAN's code: 128).
        epochs: passes over `images`, >= 1.
        batch_size: minibatch of real images (and of fakes), >= 1.
        learning_rate: Adam step size of both networks (DCGAN: 2e-4).
        beta_1: Adam's first-moment decay (DCGAN: 0.5).
        width: `models.dcgan` width of both networks.
        seed: seeds the weights (`keras.utils.set_random_seed`, which also
            seeds Python's and numpy's global generators) and the order and
            `z` draws (its own numpy generator).
        verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch
            (`keras.utils.Progbar`), each showing the running means of
            `d_loss` and `g_loss`.

    Returns:
        `(generator, history)`: the trained `models.dcgan.dcgan_generator`
        (float32 `z` `(batch, latent_dim)` -> images `(batch, height, width,
        channels)` in `[0, 1]`, to use with `z ~ N(0, I)`), and a dict with
        the per-epoch means of `"d_loss"` and `"g_loss"` (lists of floats).

    Raises:
        ValueError: `images` not a float32 rank-4 numpy array in `[0, 1]`
            with at least `batch_size` images, or a bad `epochs`,
            `batch_size`, `learning_rate`, `beta_1`, `latent_dim`, `width`
            or image shape.

    Example:
        >>> from data.fashion_mnist import load_fashion_mnist
        >>> x, _ = load_fashion_mnist("train")
        >>> x = x[:20000, ..., None].astype("float32") / 255.0
        >>> generator, history = fit_gan(x, epochs=2)
    """
    _check(images, epochs, batch_size, learning_rate, beta_1)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    generator, discriminator, combined = _models(
        images.shape[1:], latent_dim, width, learning_rate, beta_1)
    steps = len(images) // batch_size
    history = {"d_loss": [], "g_loss": []}
    for epoch in range(epochs):
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}")
        # The bar shows the epoch's running means (Keras's Progbar would
        # show the last batch's value on its final line).
        bar = keras.utils.Progbar(steps, verbose=verbose,
                                  stateful_metrics=("d_loss", "g_loss"))
        order = rng.permutation(len(images))
        total = np.zeros(2)
        for step in range(steps):
            real = images[order[step * batch_size:(step + 1) * batch_size]]
            total += _step(real, rng, generator, discriminator, combined,
                           latent_dim)
            bar.update(step + 1, values=list(zip(("d_loss", "g_loss"),
                                                 total / (step + 1))))
        history["d_loss"].append(float(total[0] / steps))
        history["g_loss"].append(float(total[1] / steps))
    return generator, history
