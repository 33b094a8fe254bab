"""Per-example image preprocessing: scaling, resizing, crops and flips.

Every function works on one example of shape `(height, width, channels)`
and returns float32 pixels in `[0, 1]`. Random functions are stateless: they
take a `seed` of shape `(2,)` (int32 or int64), so a pipeline seeded once is
reproducible however many threads run the map.

References:
    He et al. 2016, "Deep Residual Learning for Image Recognition",
        arXiv 1512.03385, Sec. 4.2: CIFAR training pads 4 pixels on each
        side, takes a random 32x32 crop and flips horizontally at random
        (also Madry et al. 2018, arXiv 1706.06083, for CIFAR-10).
    Szegedy et al. 2015, "Going Deeper with Convolutions", arXiv 1409.4842,
        Sec. 6: crops of 8%-100% of the image area with aspect ratio in
        [3/4, 4/3], resized to the input size ("random-resized crop").
"""

import tensorflow as tf

# ImageNet eval: resize the shorter side to 256, center crop 224
# (He et al. 2016, Sec. 3.4, single-crop testing); scaled for other sizes.
_EVAL_RESIZE_RATIO = 256 / 224


def to_unit_float(x: tf.Tensor) -> tf.Tensor:
    """Converts uint8 pixels in `[0, 255]` to float32 in `[0, 1]`.

    Args:
        x: uint8 image(s) of any shape, e.g. `(height, width, channels)`.

    Returns:
        float32 tensor of the same shape, values in `[0, 1]`.
    """
    return tf.cast(x, tf.float32) / 255.0


def adapt_image(
    x: tf.Tensor, image_size: int | None = None, channels: int | None = None
) -> tf.Tensor:
    """Resizes to a square size and/or tiles grayscale to 3 channels.

    Args:
        x: float32 image `(height, width, channels)` or batch
            `(batch, height, width, channels)`, values in `[0, 1]`.
        image_size: if given, bilinear resize to `(image_size, image_size)`.
        channels: if 3 and `x` has 1 channel, the channel is tiled 3 times;
            `None` or equal to the input channels leaves them unchanged.

    Returns:
        float32 tensor with the new height, width and channels, in `[0, 1]`.

    Raises:
        ValueError: if `channels` is neither `None`, the input's channel
            count, nor 3 for a 1-channel input (e.g. 1 for an RGB image).
    """
    in_channels = x.shape[-1]
    if channels is not None and channels != in_channels:
        if not (channels == 3 and in_channels == 1):
            raise ValueError(
                f"cannot convert {in_channels}-channel images to "
                f"channels={channels}; accepted: None, {in_channels}"
                + (", 3" if in_channels == 1 else "")
            )
        x = tf.tile(x, [1] * (x.shape.rank - 1) + [3])
    if image_size is not None and tuple(x.shape[-3:-1]) != (
        image_size,
        image_size,
    ):
        x = tf.image.resize(x, [image_size, image_size], method="bilinear")
        x = tf.clip_by_value(x, 0.0, 1.0)
    return x


def cifar_crop_flip(
    x: tf.Tensor, seed: tf.Tensor, padding: int = 4
) -> tf.Tensor:
    """Random crop after zero padding, then a random horizontal flip.

    He et al. 2016 (arXiv 1512.03385), Sec. 4.2: pad 4 px per side, random
    32x32 crop, random horizontal flip.

    Args:
        x: float32 image `(height, width, channels)`, values in `[0, 1]`.
        seed: int32/int64 tensor of shape `(2,)` for the stateless ops.
        padding: zero pixels added on each side before cropping.

    Returns:
        float32 image of the same shape as `x`, values in `[0, 1]`.
    """
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    shape = tf.shape(x)
    padded = tf.pad(x, [[padding, padding], [padding, padding], [0, 0]])
    x = tf.image.stateless_random_crop(padded, shape, seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(x, seed=flip_seed)


def _sample_crop_window(
    image_shape: tf.Tensor,
    seed: tf.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[tf.Tensor, tf.Tensor]:
    """Samples `(begin, size)` of a random-resized crop window.

    `image_shape` is `(height, width, channels)`. `begin` is
    `(y, x, 0)` and `size` is `(h, w, -1)`, as `tf.slice` takes them. If
    10 attempts find no window, the whole image is used.
    """
    whole_image = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=whole_image,
        seed=seed,
        min_object_covered=scale[0],
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def _resize_flip(crop, image_size, flip_seed):
    x = tf.image.resize(crop, [image_size, image_size], method="bilinear")
    x = tf.image.stateless_random_flip_left_right(x, seed=flip_seed)
    return tf.clip_by_value(x / 255.0, 0.0, 1.0)


def random_resized_crop(
    image: tf.Tensor,
    seed: tf.Tensor,
    image_size: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """ImageNet training crop: random-resized crop plus horizontal flip.

    Szegedy et al. 2015 (arXiv 1409.4842), Sec. 6: a crop covering
    `scale` of the area with aspect ratio in `ratio`, resized (bilinear) to
    `image_size` squared, then flipped left-right with probability 1/2.

    Args:
        image: uint8 image `(height, width, 3)` in `[0, 255]`.
        seed: int32/int64 tensor of shape `(2,)`.
        image_size: output height and width.
        scale: range of the crop's fraction of the image area.
        ratio: range of the crop's width / height.

    Returns:
        float32 image `(image_size, image_size, 3)`, values in `[0, 1]`.
    """
    window_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    begin, size = _sample_crop_window(
        tf.shape(image), window_seed, scale, ratio
    )
    crop = tf.slice(image, begin, size)
    return _resize_flip(crop, image_size, flip_seed)


def random_resized_crop_jpeg(
    jpeg: tf.Tensor,
    seed: tf.Tensor,
    image_size: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """`random_resized_crop` on an encoded JPEG, decoding only the crop.

    Same sampling as `random_resized_crop`; decoding just the window with
    `tf.image.decode_and_crop_jpeg` is much cheaper for large images.

    Args:
        jpeg: scalar tf.string, a JPEG-encoded RGB image.
        seed: int32/int64 tensor of shape `(2,)`.
        image_size: output height and width.
        scale: range of the crop's fraction of the image area.
        ratio: range of the crop's width / height.

    Returns:
        float32 image `(image_size, image_size, 3)`, values in `[0, 1]`.
    """
    window_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    shape = tf.image.extract_jpeg_shape(jpeg)
    begin, size = _sample_crop_window(shape, window_seed, scale, ratio)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    crop = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    crop.set_shape([None, None, 3])
    return _resize_flip(crop, image_size, flip_seed)


def center_crop(image: tf.Tensor, image_size: int = 224) -> tf.Tensor:
    """ImageNet evaluation: resize the shorter side, then center crop.

    The shorter side is resized (bilinear) to `round(256 * image_size /
    224)`, i.e. 256 for the standard 224 input, and the central
    `image_size` squared window is kept (single-crop testing, He et al.
    2016, arXiv 1512.03385).

    Args:
        image: uint8 image `(height, width, 3)` in `[0, 255]`.
        image_size: output height and width.

    Returns:
        float32 image `(image_size, image_size, 3)`, values in `[0, 1]`.
    """
    short_side = round(_EVAL_RESIZE_RATIO * image_size)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    factor = short_side / tf.reduce_min(hw)
    new_hw = tf.maximum(tf.cast(tf.round(hw * factor), tf.int32), image_size)
    x = tf.image.resize(image, new_hw, method="bilinear")
    top, left = tf.unstack((new_hw - image_size) // 2)
    x = tf.slice(x, [top, left, 0], [image_size, image_size, -1])
    x = tf.ensure_shape(x, [image_size, image_size, None])
    return tf.clip_by_value(x / 255.0, 0.0, 1.0)
