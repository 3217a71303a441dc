"""Image files in, as normalised model inputs (Pillow), for the apps' figures."""

import os

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# torchvision / official MAE normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def find_images(paths):
    """Image files named by `paths`: files as given, folders' images (sorted, not recursive).

    Args:
        paths: str or list of str; image files and / or folders.

    Returns:
        list of file paths, at least one.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
            files.extend(os.path.join(path, n) for n in names)
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


def check_normalisation(mean, std, num_channels):
    """Per-channel (mean, std) as float32 arrays of length num_channels (a single value is repeated)."""
    out = []
    for name, values in (("mean", mean), ("std", std)):
        values = np.asarray(values, "float32").reshape(-1)
        if values.size == 1:
            values = np.repeat(values, num_channels)
        if values.size != num_channels:
            raise ValueError(
                f"{name} has {values.size} values for {num_channels}-channel images; give 1 or {num_channels}. "
                f"Received: {name}={values.tolist()}"
            )
        out.append(values)
    if np.any(out[1] <= 0):
        raise ValueError(f"std must be positive. Received: std={out[1].tolist()}")
    return tuple(out)


def read_images(files, image_size, num_channels, mean, std):
    """Reads, resizes (bicubic, as the official demo: no crop) and normalises images.

    Args:
        files: list of image paths.
        image_size: (height, width).
        num_channels: int. 1 (grayscale), 3 (RGB) or 4 (RGBA).
        mean, std: per-channel normalisation of [0, 1] pixels.

    Returns:
        float32 array (len(files), height, width, num_channels): `(pixels / 255 - mean) / std`.
    """
    from PIL import Image

    if num_channels not in PIL_MODES:
        raise ValueError(f"Image files give 1, 3 or 4 channels. Received: num_channels={num_channels}")
    mean, std = check_normalisation(mean, std, num_channels)
    height, width = image_size
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                image = image.convert(PIL_MODES[num_channels]).resize((width, height), Image.Resampling.BICUBIC)
        except OSError as error:
            raise ValueError(f"Cannot read image {path!r} ({error}); pass image files Pillow can open.") from None
        images.append(np.asarray(image, "float32").reshape(height, width, num_channels) / 255.0)
    return ((np.stack(images) - mean) / std).astype("float32")
