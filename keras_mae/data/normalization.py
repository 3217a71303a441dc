"""Per-channel normalisation in the input pipeline: the map there (tf ops) and back (numpy, for display).

Model inputs are `(pixels / 255 - mean) / std` per channel, torchvision's
`Normalize` after `ToTensor`, with mean/std in [0, 1] units. The statistics,
their fit to a channel count and the same map in `keras.ops` (for a model
that normalises uint8 pixels itself) are `keras_mae/layers/pixel_normalization.py`.
"""

import numpy as np

# The statistics and their fit live with the device's map, which must not import TensorFlow.
from keras_mae.layers.pixel_normalization import (  # noqa: F401 (re-exported)
    ALPHA_MEAN,
    ALPHA_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    fit_normalization,
    fit_to_channels,
    scale_and_offset,
)


def normalize(image, mean, std):
    """Maps [0, 255] pixels to `(x / 255 - mean) / std`, float32, per channel (tf ops, for tf.data).

    Computed as `x * scale + offset` (equal to float32 rounding, 5e-7). For an image of static shape the two
    are constants of its shape: TensorFlow's CPU kernels broadcast a per-channel vector about 6x slower than
    they multiply same-shape tensors, which made this the pipeline's costliest step at 224 px
    (benchmarks/input_pipeline.py).
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    scale, offset = scale_and_offset(mean, std)
    if image.shape.is_fully_defined():
        scale, offset = np.broadcast_to(scale, image.shape), np.broadcast_to(offset, image.shape)
    return image * tf.constant(scale, tf.float32) + tf.constant(offset, tf.float32)


def denormalize(images, mean, std):
    """Inverts `normalize` for display: the one way back from model inputs to pictures.

    Args:
        images: array-like `[..., C]` (numpy, or any tensor `np.asarray` accepts).
        mean: sequence of C (or 1) floats.
        std: sequence of C (or 1) floats.

    Returns:
        float32 numpy array of the same shape, clipped to [0, 1] (`to_uint8` for 8-bit pixels).

    >>> denormalize(np.zeros((1, 1, 1)), [0.5], [0.2]).tolist()
    [[[0.5]]]
    """
    images = np.asarray(images, dtype=np.float32)
    return np.clip(images * np.asarray(std, np.float32) + np.asarray(mean, np.float32), 0.0, 1.0)


def to_uint8(images, mean, std):
    """`denormalize` as 8-bit display pixels (rounded)."""
    return (denormalize(images, mean, std) * 255.0 + 0.5).astype("uint8")
