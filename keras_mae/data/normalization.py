"""Per-channel normalisation: the statistics, their fit to a channel count, and the map there and back.

Model inputs are `(pixels / 255 - mean) / std` per channel, torchvision's
`Normalize` after `ToTensor`, with mean/std in [0, 1] units.
"""

import numpy as np

# torchvision / official MAE normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# An alpha channel has no published statistics: 0.5 / 0.5 maps [0, 1] to [-1, 1].
ALPHA_MEAN, ALPHA_STD = 0.5, 0.5


def fit_to_channels(values, num_channels, alpha_value):
    """Fits a per-channel mean or std to `num_channels`.

    Grey from RGB takes the channel average (an approximation: the exact grey
    statistics depend on the data); one value or grey to RGB repeats; alpha
    gets `alpha_value`.

    Args:
        values: sequence of 1, 3 or 4 floats.
        num_channels: int. 1, 3 or 4.
        alpha_value: float. Value used for a 4th channel that `values` lacks.

    Returns:
        Tuple of `num_channels` floats.

    >>> [round(v, 4) for v in fit_to_channels(IMAGENET_MEAN, 1, ALPHA_MEAN)]
    [0.449]
    """
    values = tuple(float(v) for v in np.ravel(values))
    if len(values) not in (1, 3, 4):
        raise ValueError(f"mean/std have 1, 3 or 4 values (one per channel). Received: {list(values)}")
    if len(values) == num_channels:
        return values
    rgb = values[:3] if len(values) >= 3 else values * 3
    if num_channels == 1:
        return (sum(rgb) / 3,)
    return rgb if num_channels == 3 else rgb + (alpha_value,)


def fit_normalization(mean, std, num_channels):
    """The (mean, std) pair fitted to `num_channels`, checked: one tuple of floats each, std positive.

    Args:
        mean, std: sequences of 1, 3 or 4 floats, or None for ImageNet's.
        num_channels: int. 1, 3 or 4.

    Returns:
        (mean, std), tuples of `num_channels` floats.

    >>> fit_normalization(None, [0.5], 3)
    ((0.485, 0.456, 0.406), (0.5, 0.5, 0.5))
    """
    mean = fit_to_channels(IMAGENET_MEAN if mean is None else mean, num_channels, ALPHA_MEAN)
    std = fit_to_channels(IMAGENET_STD if std is None else std, num_channels, ALPHA_STD)
    if min(std) <= 0:
        raise ValueError(f"std must be positive. Received: std={list(std)}")
    return mean, std


def normalize(image, mean, std):
    """Maps [0, 255] pixels to `(x / 255 - mean) / std`, float32, per channel (tf ops, for tf.data).

    Computed as `x * scale + offset` (equal to float32 rounding, 5e-7). For an image of static shape the two
    are constants of its shape: TensorFlow's CPU kernels broadcast a per-channel vector about 6x slower than
    they multiply same-shape tensors, which made this the pipeline's costliest step at 224 px
    (benchmarks/input_pipeline.py).
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    std = np.asarray(std, np.float32)
    scale, offset = 1.0 / (255.0 * std), -np.asarray(mean, np.float32) / std
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
