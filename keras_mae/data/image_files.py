"""Named image files in, as normalised model inputs: the reader of `apps/visualize.py` and of users' scripts.

It decodes with the folder pipeline's reader (`image_folder.read_image`: every
Pillow mode, 16-bit grey, palettes with transparency) and normalises with
`normalization.normalize`, so a picture shown to the model here gets the
pixels it would get in training.
"""

import os

import numpy as np
from PIL import Image

from keras_mae.data.image_folder import IMAGE_EXTENSIONS, list_image_files, read_image
from keras_mae.data.normalization import fit_normalization, normalize


def find_images(paths):
    """Image files named by `paths`: files as given, folders' images (recursive, sorted).

    Args:
        paths: str or list of str; image files and / or folders.

    Returns:
        list of file paths, at least one.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            files.extend(list_image_files(path)[0])
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"Image path {path!r} does not exist; pass image files or a folder of them.")
    if not files:
        raise ValueError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(repr, paths)) or 'no paths'}; "
            "pass image files or a folder of them."
        )
    return files


def read_images(files, image_size, num_channels, mean=None, std=None):
    """Reads, resizes (bicubic, as the official demo: no crop) and normalises images.

    Args:
        files: list of image paths.
        image_size: (height, width).
        num_channels: int. 1 (grey), 3 (RGB) or 4 (RGBA).
        mean, std: per-channel normalisation of [0, 1] pixels (1, 3 or 4 values, fitted to
            `num_channels` by `fit_normalization`); None for ImageNet's.

    Returns:
        float32 array (len(files), height, width, num_channels): `(pixels / 255 - mean) / std`.
    """
    mean, std = fit_normalization(mean, std, num_channels)
    height, width = image_size
    images = []
    for path in files:
        try:
            pixels = read_image(path, num_channels)
        except OSError as error:
            raise ValueError(f"Cannot read image {path!r} ({error}); pass image files Pillow can open.") from None
        image = Image.fromarray(pixels[..., 0] if num_channels == 1 else pixels)
        resized = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))
        images.append(resized.reshape(height, width, num_channels))
    return np.asarray(normalize(np.stack(images), mean, std))
