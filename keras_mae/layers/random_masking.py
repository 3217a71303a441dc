"""Per-sample random masking by argsort of noise, as facebookresearch/mae `random_masking`."""

import itertools
import math

import keras
from keras import ops

from keras_mae.layers.batch_gather import batch_gather

STRATEGIES = ("random", "block", "grid")


def num_kept(num_patches, mask_ratio):
    """`int(L * (1 - mask_ratio))`, the official count of visible patches."""
    return int(num_patches * (1 - mask_ratio))


@keras.saving.register_keras_serializable(package="keras_mae")
class RandomMasking(keras.layers.Layer):
    """Keeps a random subset of tokens per sample: the ones with the lowest noise.

    As the official code: `ids_shuffle = argsort(noise)`, `ids_restore =
    argsort(ids_shuffle)`, the first `int(L * (1 - mask_ratio))` of the
    shuffle are kept. The strategies of the paper's Table 1f only change the
    noise: "random" is uniform noise; "block" is BEiT-style blockwise masking
    (rectangles of random area and aspect ratio 0.3 to 1/0.3, masked in the
    order they were drawn until the masked count is reached); "grid" keeps one
    patch in each 2x2 cell (exact at mask_ratio 0.75 on even grids), with a
    random offset per sample.

    Args:
        mask_ratio: float in [0, 1). Fraction of patches removed. Defaults to 0.75.
        strategy: str. "random", "block" or "grid". Defaults to "random".
        grid_size: (grid_h, grid_w) or None. Patch grid; needed by "block" and "grid".
        seed: int or None. Seed of the layer's `SeedGenerator`.

    Call arguments:
        tokens: tensor (batch, num_patches, dim).
        noise: optional float tensor (batch, num_patches) in [0, 1), for
            deterministic masks; drawn from the seed generator when None.

    Returns:
        `(visible, mask, ids_restore)`: visible tokens (batch, num_kept, dim);
        mask (batch, num_patches), 0 is keep, 1 is remove, in the original
        patch order; ids_restore (batch, num_patches) int32, the inverse shuffle.

    >>> import numpy as np
    >>> visible, mask, ids_restore = RandomMasking(0.75, seed=0)(np.zeros((2, 16, 8), "float32"))
    >>> tuple(visible.shape), tuple(mask.shape)
    ((2, 4, 8), (2, 16))
    """

    def __init__(self, mask_ratio=0.75, strategy="random", grid_size=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(mask_ratio) < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), e.g. 0.75. Received: mask_ratio={mask_ratio}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={strategy!r}")
        if strategy != "random" and grid_size is None:
            raise ValueError(f"strategy={strategy!r} needs grid_size=(grid_h, grid_w).")
        self.mask_ratio = float(mask_ratio)
        self.strategy = strategy
        self.grid_size = None if grid_size is None else tuple(int(g) for g in grid_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, tokens, noise=None):
        batch, length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        if noise is None:
            noise = self.sample_noise(batch, length)
        len_keep = num_kept(length, self.mask_ratio)
        ids_shuffle = ops.cast(ops.argsort(noise, axis=1), "int32")
        ids_restore = ops.cast(ops.argsort(ids_shuffle, axis=1), "int32")
        visible = batch_gather(tokens, ids_shuffle[:, :len_keep])
        mask = ops.cast(ids_restore >= len_keep, "float32")
        return visible, mask, ids_restore

    def sample_noise(self, batch, length, seed=None):
        """Noise (batch, length) whose argsort gives this strategy's masks.

        Args:
            batch, length: ints (or scalar tensors).
            seed: int or None. None draws from the layer's `SeedGenerator`
                (new masks each call); an int gives the same noise every call
                (fixed evaluation masks), whatever the layer's state.
        """
        seeds = itertools.repeat(self.seed_generator) if seed is None else itertools.count(int(seed) * 16)
        if self.strategy == "random":
            return keras.random.uniform((batch, length), seed=next(seeds))
        if self.grid_size[0] * self.grid_size[1] != length:
            raise ValueError(f"grid_size={self.grid_size} does not match {length} tokens.")
        if self.strategy == "grid":
            return self._grid_noise(batch, seeds)
        return self._block_noise(batch, length, seeds)

    def _grid_noise(self, batch, seeds):
        grid_h, grid_w = self.grid_size
        rows = ops.arange(grid_h)[:, None] * ops.ones((1, grid_w), "int32")
        cols = ops.ones((grid_h, 1), "int32") * ops.arange(grid_w)[None, :]
        offset = keras.random.randint((batch, 2, 1, 1), 0, 2, seed=next(seeds))
        on_grid = ops.logical_and(rows[None] % 2 == offset[:, 0], cols[None] % 2 == offset[:, 1])
        u = keras.random.uniform((batch, grid_h, grid_w), seed=next(seeds))
        noise = ops.where(on_grid, 0.5 * u, 0.5 + 0.5 * u)  # grid cells first, i.e. kept
        return ops.reshape(noise, (batch, grid_h * grid_w))

    def _block_noise(self, batch, length, seeds):
        grid_h, grid_w = self.grid_size
        num_mask = length - num_kept(length, self.mask_ratio)
        min_area = max(1, round(16 * length / 196))  # BEiT: 16 patches of a 14x14 grid
        max_area = max(min_area, num_mask)
        num_blocks = 2 * math.ceil(length / min_area)
        area = keras.random.uniform((batch, num_blocks), min_area, max_area + 1e-6, seed=next(seeds))
        log_ratio = keras.random.uniform((batch, num_blocks), math.log(0.3), -math.log(0.3), seed=next(seeds))
        ratio = ops.exp(log_ratio)
        height = ops.clip(ops.round(ops.sqrt(area * ratio)), 1, grid_h)
        width = ops.clip(ops.round(ops.sqrt(area / ratio)), 1, grid_w)
        top = ops.floor(keras.random.uniform((batch, num_blocks), seed=next(seeds)) * (grid_h - height + 1))
        left = ops.floor(keras.random.uniform((batch, num_blocks), seed=next(seeds)) * (grid_w - width + 1))
        rows = ops.cast(ops.arange(length) // grid_w, "float32")[None, None]  # [1, 1, L]
        cols = ops.cast(ops.arange(length) % grid_w, "float32")[None, None]
        inside = (
            (rows >= top[..., None]) & (rows < (top + height)[..., None])
            & (cols >= left[..., None]) & (cols < (left + width)[..., None])
        )  # [B, K, L]
        block_ids = ops.cast(ops.arange(num_blocks), "float32")[None, :, None]
        first = ops.min(ops.where(inside, block_ids, float(num_blocks)), axis=1)  # [B, L]
        u = keras.random.uniform((batch, length), seed=next(seeds))
        # Uncovered patches are kept first; earlier blocks are removed first.
        covered = 0.5 + 0.5 * (num_blocks - 1 - first + u) / num_blocks
        return ops.where(first < num_blocks, covered, 0.25 * u)

    def compute_output_shape(self, input_shape):
        batch, length, dim = input_shape
        return (batch, num_kept(length, self.mask_ratio), dim), (batch, length), (batch, length)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"mask_ratio": self.mask_ratio, "strategy": self.strategy, "grid_size": self.grid_size, "seed": self.seed}
        )
        return config
