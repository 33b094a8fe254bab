"""Image quilting from a database of clean patches (Guo et al. 2018), a
randomized input-purification defense."""

import keras
import numpy as np
from keras import ops

from layers.jpeg_compression import pad_edge


@keras.saving.register_keras_serializable(package="robust_recipes")
class ImageQuilting(keras.layers.Layer):
    """Replaces every patch of the image by a nearby clean database patch.

    The input is edge-padded to multiples of `patch_size` and cut into
    non-overlapping `patch_size x patch_size` tiles. Each tile is replaced
    by one of its `neighbours` nearest database patches (L2 over pixels and
    channels), drawn uniformly at random per tile and call from the layer's
    own `keras.random.SeedGenerator`; the padding is cropped off.

    The database is a non-trainable weight `(num_patches, patch_size**2 *
    channels)`, rows flattened in (row, column, channel) order, typically
    sampled from clean training images by `ImageQuilting.from_images`. It
    is saved with the weights, not in `get_config`: a layer rebuilt from
    its config alone holds zeros until weights are loaded (`.keras` files
    do that).

    Simplifications: Guo et al. quilt overlapping patches stitched along
    minimum-error seams (graph cut, Efros & Freeman 2001); here tiles do not
    overlap and are pasted as they are. Neighbours are exact (brute force in
    database chunks of `chunk_size` rows, bounding memory at
    `batch * tiles * chunk_size` scores), where Guo et al. search
    approximately (FAISS).

    Threat model: `randomized = True` (EOT) and `differentiable = False`
    (the output is made of database pixels, so its input gradient is zero):
    attack with BPDA, the identity as backward surrogate, and EOT
    (Athalye, Carlini & Wagner 2018, arXiv 1802.00420, Sec. 4.1 and 5.3).

    Args:
        patch_size: int >= 1, tile height and width in pixels.
        neighbours: int in `[1, num_patches]`, the K of the K nearest
            database patches among which one is drawn.
        database: float array `(num_patches, patch_size**2 * channels)`,
            pixels in `[0, 1]`, or None (then pass `num_patches`; zeros
            until weights are loaded).
        num_patches: int >= 1 or None; required when `database` is None,
            must equal `len(database)` otherwise.
        chunk_size: int >= 1, database rows compared per chunk.
        seed: int or None, seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: forwarded to `keras.layers.Layer` (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(batch, height, width, channels)` with static
            height, width and channels, pixels in `[0, 1]`.

    Returns:
        float32 tensor of the input's shape, every tile a database patch
        (cropped at the bottom / right edge when the size is not a multiple
        of `patch_size`).

    Raises:
        ValueError: for a bad argument (the message names the bad value and
            the accepted ones), or when built on an input that is not rank
            4 with static sizes or does not match the database's rows.

    Example:
        >>> quilt = ImageQuilting.from_images(x_train, patch_size=4,
        ...                                   max_patches=100_000, seed=0)
        >>> x_quilted = quilt(x)          # x: (batch, 28, 28, 1) in [0, 1]

    References:
        Guo, Rana, Cisse, van der Maaten 2018, "Countering Adversarial
        Images using Input Transformations", ICLR, arXiv 1711.00117,
        Sec. 3.3 (image quilting: patch database from clean images, one of
        the K nearest neighbours drawn uniformly at random). Efros &
        Freeman 2001, "Image Quilting for Texture Synthesis and Transfer",
        SIGGRAPH.
    """

    differentiable = False
    randomized = True

    def __init__(self, patch_size=4, neighbours=10, database=None,
                 num_patches=None, chunk_size=4096, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_int("patch_size", patch_size)
        _check_int("neighbours", neighbours)
        _check_int("chunk_size", chunk_size)
        if database is not None:
            database = np.asarray(database, dtype="float32")
            if (database.ndim != 2 or len(database) == 0
                    or database.shape[1] % (patch_size * patch_size)
                    or not np.all(np.isfinite(database))):
                raise ValueError(
                    "database must be a finite float array (num_patches, "
                    f"{patch_size}*{patch_size}*channels); got shape "
                    f"{database.shape}")
            if num_patches not in (None, len(database)):
                raise ValueError(
                    f"num_patches must be None or len(database)="
                    f"{len(database)}; got {num_patches!r}")
            num_patches = len(database)
        if (isinstance(num_patches, bool) or not isinstance(num_patches, int)
                or num_patches < 1):
            raise ValueError(
                "pass database, or num_patches as an int >= 1; got "
                f"num_patches={num_patches!r}")
        if neighbours > num_patches:
            raise ValueError(
                f"neighbours must be in [1, {num_patches}] (num_patches); "
                f"got {neighbours!r}")
        self.patch_size = patch_size
        self.neighbours = neighbours
        self.num_patches = num_patches
        self.chunk_size = chunk_size
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._initial_database = database

    @classmethod
    def from_images(cls, images, patch_size=4, max_patches=100_000,
                    seed=None, neighbours=10, **kwargs):
        """An `ImageQuilting` layer whose database holds
        `min(max_patches, all positions)` patches of clean `images`, at
        distinct positions (any offset, stride 1) drawn uniformly at random.

        Args:
            images: float array `(num_images, height, width, channels)`,
                pixels in `[0, 1]`, height and width >= `patch_size`.
            patch_size: int >= 1.
            max_patches: int >= 1, database size cap.
            seed: int or None; seeds the position draw (numpy) and the
                layer's own seed generator.
            neighbours: int, the layer's K.
            **kwargs: other `ImageQuilting` arguments (`chunk_size`, ...).

        Raises:
            ValueError: if `images` is not rank 4 or smaller than a patch,
                or `max_patches` is not an int >= 1.
        """
        images = np.asarray(images, dtype="float32")
        if images.ndim != 4 or min(images.shape[1:3]) < patch_size:
            raise ValueError(
                "images must be (num_images, height, width, channels) with "
                f"height, width >= patch_size={patch_size}; got shape "
                f"{images.shape}")
        _check_int("max_patches", max_patches)
        windows = np.lib.stride_tricks.sliding_window_view(
            images, (patch_size, patch_size), axis=(1, 2))
        positions = windows.shape[:3]  # (image, top, left)
        total = int(np.prod(positions))
        rng = np.random.default_rng(seed)
        flat = rng.choice(total, size=min(max_patches, total), replace=False)
        picked = windows[np.unravel_index(np.sort(flat), positions)]
        # (n, channels, row, col) -> rows flattened as (row, col, channel).
        database = np.moveaxis(picked, 1, -1).reshape(len(flat), -1)
        return cls(patch_size=patch_size, neighbours=neighbours,
                   database=database, seed=seed, **kwargs)

    def build(self, input_shape):
        if len(input_shape) != 4 or any(d is None for d in input_shape[1:]):
            raise ValueError(
                "ImageQuilting expects (batch, height, width, channels) with "
                f"static height, width, channels; got {tuple(input_shape)}")
        dim = self.patch_size * self.patch_size * input_shape[-1]
        initial = self._initial_database
        if initial is not None and initial.shape[1] != dim:
            raise ValueError(
                f"database rows have {initial.shape[1]} values but "
                f"{input_shape[-1]}-channel {self.patch_size}x"
                f"{self.patch_size} patches need {dim}")
        # Without a database the values come with the weights (loading).
        initializer = "zeros" if initial is None else (
            lambda shape, dtype=None: ops.convert_to_tensor(initial, dtype))
        self.database = self.add_weight(
            name="database", shape=(self.num_patches, dim),
            initializer=initializer, trainable=False)

    def nearest(self, patches):
        """The `neighbours` nearest database rows of each of `patches`,
        float `(num_queries, patch_size**2 * channels)`.

        Returns:
            `(indices, sq_distances)`: int32 and float32, both
            `(num_queries, neighbours)`, by increasing squared L2 distance.
        """
        patches = ops.cast(patches, "float32")
        norms = ops.sum(patches * patches, axis=1, keepdims=True)
        # score = 2 q.d - |d|^2 = |q|^2 - |q - d|^2, one matmul per chunk.
        augmented = ops.concatenate([patches, ops.ones_like(norms)], axis=1)
        best = None
        for start in range(0, self.num_patches, self.chunk_size):
            rows = self.database[start:start + self.chunk_size]
            rows = ops.concatenate(
                [2.0 * rows, -ops.sum(rows * rows, axis=1, keepdims=True)],
                axis=1)
            k = min(self.neighbours, rows.shape[0])
            score, index = ops.top_k(
                ops.matmul(augmented, ops.transpose(rows)), k)
            index = ops.cast(index, "int32") + start
            if best is not None:  # merge with the best of earlier chunks
                score = ops.concatenate([best[0], score], axis=1)
                index = ops.concatenate([best[1], index], axis=1)
                score, keep = ops.top_k(score, self.neighbours)
                index = ops.take_along_axis(index, keep, axis=1)
            best = (score, index)
        return best[1], ops.maximum(norms - best[0], 0.0)

    def call(self, inputs):
        height, width, channels = inputs.shape[1:]
        size = self.patch_size
        x = pad_edge(ops.cast(inputs, "float32"), size)
        rows, cols = x.shape[1] // size, x.shape[2] // size
        tiles = ops.reshape(x, (-1, rows, size, cols, size, channels))
        tiles = ops.reshape(ops.transpose(tiles, (0, 1, 3, 2, 4, 5)),
                            (-1, size * size * channels))
        index, _ = self.nearest(tiles)
        pick = keras.random.randint((ops.shape(tiles)[0], 1), 0,
                                    self.neighbours, seed=self.seed_generator)
        chosen = ops.take_along_axis(index, ops.cast(pick, "int32"), axis=1)
        out = ops.take(self.database, chosen[:, 0], axis=0)
        out = ops.reshape(out, (-1, rows, cols, size, size, channels))
        out = ops.reshape(ops.transpose(out, (0, 1, 3, 2, 4, 5)),
                          (-1, rows * size, cols * size, channels))
        return out[:, :height, :width, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size,
                       "neighbours": self.neighbours,
                       "num_patches": self.num_patches,
                       "chunk_size": self.chunk_size, "seed": self.seed})
        return config


def _check_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
