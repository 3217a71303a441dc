"""Per-channel pixel normalisation: its statistics, fitted to a channel count, and the map in `keras.ops`.

Model inputs are `(pixels / 255 - mean) / std` per channel, torchvision's
`Normalize` after `ToTensor`, with mean/std in [0, 1] units. The input
pipelines compute it on the host (`keras_mae.data.normalize`, tf ops); a
`MaskedAutoencoder` given uint8 pixels computes it here, in its own step on
the device, with the same float32 constants. Neither needs TensorFlow here.
"""

import keras
import numpy as np
from keras import ops

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


def scale_and_offset(mean, std):
    """float32 `(scale, offset)` with `pixels * scale + offset == (pixels / 255 - mean) / std` (to float32 rounding).

    The one place both maps take their constants from, so the host's and the device's agree bit for bit.
    """
    std = np.asarray(std, np.float32)
    return (1.0 / (255.0 * std)).astype(np.float32), (-np.asarray(mean, np.float32) / std).astype(np.float32)


def are_pixels(images):
    """True for uint8 pixels, False for floating (normalised) model inputs; any other dtype is a ValueError."""
    dtype = keras.backend.standardize_dtype(images.dtype)
    if dtype != "uint8" and "float" not in dtype:
        raise ValueError(f"Images are uint8 pixels in [0, 255] or floating, normalised model inputs. Received "
                         f"dtype {dtype}: convert them to uint8 (8-bit pixels) or normalise them to float32 first.")
    return dtype == "uint8"


def normalize_pixels(images, mean, std):
    """uint8 pixels `[..., C]` -> float32 model inputs; anything floating passes as it is (already normalised).

    Args:
        images: tensor or array `[..., C]`: uint8 pixels in [0, 255], or floating model inputs.
        mean, std: sequences of C floats (`fit_normalization`'s).

    Returns:
        float32 `(images / 255 - mean) / std` for uint8 pixels, else `images` unchanged.

    >>> keras.ops.convert_to_numpy(normalize_pixels(np.full((1, 1, 1), 255, "uint8"), [0.5], [0.5])).tolist()
    [[[1.0]]]
    """
    if not are_pixels(images):
        return images
    scale, offset = scale_and_offset(mean, std)
    # keras.ops on both sides: a torch tensor times a numpy array would read the tensor back to the host.
    pixels = ops.cast(images, "float32")
    return ops.add(ops.multiply(pixels, ops.convert_to_tensor(scale)), ops.convert_to_tensor(offset))
