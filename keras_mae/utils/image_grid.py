"""Figures of reconstructions as uint8 image grids, and PNG writing (no plotting library)."""

import numpy as np

from keras_mae.data.normalization import to_uint8


def reconstruction_grid(images, reconstruction, mean, std, gap=2):
    """One row per image: original | masked | reconstruction | reconstruction + visible.

    Args:
        images: (n, h, w, c) normalised images.
        reconstruction: dict from `MaskedAutoencoder.reconstruct` (numpy arrays).
        mean, std: per-channel normalisation.
        gap: int. White pixels between panels.

    Returns:
        uint8 array (rows, cols, c); RGBA is shown as RGB.
    """
    panels = [images, reconstruction["masked"], reconstruction["reconstruction"], reconstruction["pasted"]]
    panels = [to_uint8(p, mean, std) for p in panels]
    # Removed patches show grey in the masked panel, as in the paper's figures.
    mask = np.asarray(reconstruction["mask"]) > 0.5
    panels[1] = np.where(mask, np.uint8(128), panels[1])
    n, h, w, c = panels[0].shape
    c = min(c, 3)
    grid = np.full((n * (h + gap) - gap, 4 * (w + gap) - gap, c), 255, "uint8")
    for row in range(n):
        for col, panel in enumerate(panels):
            y, x = row * (h + gap), col * (w + gap)
            grid[y : y + h, x : x + w] = panel[row, :, :, :c]
    return grid


def upscale(grid, factor):
    """Nearest-neighbour enlargement, so 28-pixel images are visible."""
    return np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1)


def write_png(path, image):
    """Writes a uint8 (h, w, c) array as PNG (via TensorFlow's encoder), atomically."""
    import tensorflow as tf

    from keras_mae.utils.atomic import atomic_path

    png = tf.io.encode_png(np.asarray(image, "uint8")).numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # Python's I/O: a full disk is a DiskFullError
        f.write(png)
