"""Maximum-likelihood training of the small PixelCNN of `models/pixelcnn.py`.

The PixelCNN is trained, as in van den Oord et al. 2016 (arXiv 1601.06759,
Sec. 5.1-5.2), by minimizing the negative log-likelihood of the quantized
image under its per-pixel `levels`-way softmax, i.e. a sparse categorical
cross-entropy between the logits `(batch, H, W, levels)` and the integer
targets `round(x * (levels - 1))`; the input is the quantized image itself
(the masks keep each pixel from seeing its own target). Song et al. 2018
(PixelDefend, arXiv 1710.10766, Sec. 4) train their PixelCNN++ with the same
softmax loss. Results are reported in bits per dimension (nats / ln 2 per
pixel and channel), the paper's unit.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from core import backends
from models.pixelcnn import pixelcnn


def quantize(images, levels: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Quantized inputs and targets of a PixelCNN.

    Args:
        images: `(N, H, W)` or `(N, H, W, 1)` array; uint8 in [0, 255] or
            float in [0, 1] (values outside are clipped).
        levels: int >= 2.

    Returns:
        `(inputs, targets)`: float32 `(N, H, W, 1)` on the grid
        `k / (levels - 1)`, and int32 levels `k` of shape `(N, H, W)`.

    Raises:
        ValueError: for an array that is not 3-D or 4-D with one channel,
            or `levels < 2`.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2; got {levels!r}")
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(
            "images must be (N, H, W) or (N, H, W, 1) (grayscale); got shape "
            f"{np.shape(images)}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype("float32") / 255.0
    x = np.clip(x.astype("float32"), 0.0, 1.0)
    targets = np.round(x[..., 0] * (levels - 1)).astype("int32")
    inputs = (targets.astype("float32") / (levels - 1))[..., None]
    return inputs, targets


def fit_pixelcnn(
    images,
    *,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    filters: int,
    num_layers: int,
    levels: int = 256,
    seed: int = 0,
    verbose: int = 1,
    validation_images=None,
    callbacks=None,
    **model_kwargs,
) -> tuple[keras.Model, keras.callbacks.History]:
    """Builds and trains a PixelCNN with plain `model.fit` (Adam).

    Args:
        images: training images `(N, H, W)` or `(N, H, W, 1)`, uint8 in
            [0, 255] or float in [0, 1]; quantized to `levels` levels.
        epochs: int >= 1.
        batch_size: int >= 1.
        learning_rate: Adam learning rate (1e-3, as the PixelCNN++ code).
        filters, num_layers, levels: see `models.pixelcnn.pixelcnn`.
        seed: seeds Keras's global generators (`keras.utils.set_random_seed`:
            Python, numpy and the backend) before the model is built, so the
            initialization and the shuffling are reproducible.
        verbose: passed to `fit`.
        validation_images: optional held-out images, same format; their
            loss is logged as `val_loss` (nats per pixel).
        callbacks: optional list of `keras.callbacks.Callback`, passed to
            `fit`.
        **model_kwargs: further `pixelcnn` arguments (`kernel_size`,
            `first_kernel_size`).

    Returns:
        `(model, history)`: the trained PixelCNN (compiled with the loss
        below) and `fit`'s History; `history.history["loss"]` is the
        training NLL in nats per pixel (divide by ln 2 for bits/dim).

    Raises:
        ValueError: for malformed images or model arguments.
    """
    inputs, targets = quantize(images, levels)
    keras.utils.set_random_seed(seed)
    model = pixelcnn(inputs.shape[1:], filters=filters,
                     num_layers=num_layers, levels=levels, **model_kwargs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    validation_data = None
    if validation_images is not None:
        validation_data = quantize(validation_images, levels)
    history = model.fit(inputs, targets, batch_size=batch_size,
                        epochs=epochs, shuffle=True, verbose=verbose,
                        validation_data=validation_data,
                        callbacks=callbacks)
    return model, history


def _nll_sum(model, inputs, targets):
    """Summed NLL in nats of a batch (float32 scalar)."""
    logits = ops.cast(model(inputs, training=False), "float32")
    nll = keras.losses.sparse_categorical_crossentropy(
        targets, logits, from_logits=True)
    return ops.sum(nll)


_compiled_nll_sum = None


def bits_per_dim(model: keras.Model, images, batch_size: int = 256) -> float:
    """Average negative log2-likelihood per pixel of `images` under `model`.

    `-(1 / (N H W)) sum log2 p(x_ij | x_<ij)` over the quantized images
    (`quantize` with the model's own number of levels); with 256 levels it
    is the bits/dim of van den Oord et al. 2016 and Song et al. 2018 (with
    fewer levels it is not comparable to theirs). Computed batch by batch in
    a compiled function (`core.backends.compile_fn`), summed in float64.

    Args:
        model: a PixelCNN mapping `(batch, H, W, 1)` to logits
            `(batch, H, W, levels)`.
        images: `(N, H, W)` or `(N, H, W, 1)`, uint8 or float in [0, 1].
        batch_size: int >= 1.

    Returns:
        Python float, bits per dimension.

    Raises:
        ValueError: for malformed images.
    """
    global _compiled_nll_sum
    if _compiled_nll_sum is None:
        _compiled_nll_sum = backends.compile_fn(_nll_sum)
    levels = int(model.output_shape[-1])
    inputs, targets = quantize(images, levels)
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        stop = start + batch_size
        total += float(ops.convert_to_numpy(_compiled_nll_sum(
            model, ops.convert_to_tensor(inputs[start:stop]),
            ops.convert_to_tensor(targets[start:stop]))))
    return total / (targets.size * math.log(2.0))
