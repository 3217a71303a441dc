"""Patch embedding: a strided convolution, as timm's `PatchEmbed` used by facebookresearch/mae."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mae")
class PatchEmbedding(keras.layers.Layer):
    """Embeds non-overlapping patches of NHWC images into tokens.

    A Conv2D with kernel = stride = `patch_size`, initialised as the official
    MAE: xavier-uniform on the kernel viewed as a (hidden_dim, p * p * C)
    matrix; the bias keeps PyTorch's default Conv2d init (uniform with bound
    1 / sqrt(p * p * C)), since the official `_init_weights` touches only
    Linear and LayerNorm modules. Any channel count, non-square images.

    Args:
        patch_size: int. Side of the square patches.
        hidden_dim: int. Token width.

    Call arguments:
        images: tensor (batch, height, width, channels); height and width
            divisible by `patch_size`.

    Returns:
        Tensor (batch, num_patches, hidden_dim), patches in row-major order.

    >>> import numpy as np
    >>> tuple(PatchEmbedding(4, 8)(np.zeros((2, 8, 12, 1), "float32")).shape)
    (2, 6, 8)
    """

    def __init__(self, patch_size, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        if int(patch_size) < 1:
            raise ValueError(f"patch_size must be a positive integer. Received: patch_size={patch_size}")
        if int(hidden_dim) < 1:
            raise ValueError(f"hidden_dim must be a positive integer. Received: hidden_dim={hidden_dim}")
        self.patch_size = int(patch_size)
        self.hidden_dim = int(hidden_dim)

    def build(self, input_shape):
        height, width, channels = input_shape[1], input_shape[2], input_shape[3]
        if height is not None and width is not None and (height % self.patch_size or width % self.patch_size):
            raise ValueError(
                f"Image size {height}x{width} is not divisible by patch_size={self.patch_size}; "
                "resize or crop the images to a multiple of the patch size."
            )
        fan_in = self.patch_size * self.patch_size * channels
        # keras' glorot on a conv kernel uses fan_out = p*p*out; the official
        # code uses the 2-D view, fan_out = out. Same bound via fan_in scaling.
        scale = 2.0 * fan_in / (fan_in + self.hidden_dim)
        bound = 1.0 / math.sqrt(fan_in)
        self.projection = keras.layers.Conv2D(
            self.hidden_dim,
            self.patch_size,
            strides=self.patch_size,
            padding="valid",
            kernel_initializer=keras.initializers.VarianceScaling(scale, "fan_in", "uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
            dtype=self.dtype_policy,
            name="projection",
        )
        self.projection.build(input_shape)

    def call(self, images):
        x = self.projection(images)  # [B, gh, gw, D]
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1] * shape[2], self.hidden_dim))

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[0], input_shape[1], input_shape[2]
        length = None if height is None or width is None else (height // self.patch_size) * (width // self.patch_size)
        return (batch, length, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size, "hidden_dim": self.hidden_dim})
        return config
