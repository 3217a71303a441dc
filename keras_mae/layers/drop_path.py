"""Stochastic depth (drop path) on residual branches, as timm's `DropPath`."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mae")
class DropPath(keras.layers.Layer):
    """Drops a whole residual branch per sample with probability `rate`.

    Kept samples are scaled by 1 / (1 - rate), so the expectation is unchanged.
    Identity at inference and when `rate` is 0.

    Args:
        rate: float in [0, 1). Drop probability. Defaults to 0.
        seed: int or None. Seed of the layer's `SeedGenerator`. Defaults to None.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1). Received: rate={rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.rate > 0 else None

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype)
        return x * ops.floor(keep + noise) / keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
