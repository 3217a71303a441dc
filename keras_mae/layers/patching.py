"""Patchify and unpatchify: images <-> sequences of flattened patches.

Each patch vector is ordered (row in patch, column in patch, channel), the
order of facebookresearch/mae's `patchify` (einsum `nchpwq->nhwpqc`), so
`pred` and official `decoder_pred` weights line up exactly.
"""

from keras import ops


def _check_divisible(height, width, patch_size):
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"Image size {height}x{width} is not divisible by patch_size={patch_size}; "
            "resize or crop the images to a multiple of the patch size."
        )


def patchify(images, patch_size):
    """Splits NHWC images into flattened patches.

    Args:
        images: tensor (batch, height, width, channels).
        patch_size: int. Side of the square patches.

    Returns:
        Tensor (batch, num_patches, patch_size * patch_size * channels), patches
        in row-major grid order.

    >>> import numpy as np
    >>> tuple(patchify(np.zeros((2, 8, 12, 3), "float32"), 4).shape)
    (2, 6, 48)
    """
    batch, height, width, channels = ops.shape(images)
    _check_divisible(height, width, patch_size)
    grid_h, grid_w = height // patch_size, width // patch_size
    x = ops.reshape(images, (batch, grid_h, patch_size, grid_w, patch_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, gh, gw, p, p, C]
    return ops.reshape(x, (batch, grid_h * grid_w, patch_size * patch_size * channels))


def unpatchify(patches, patch_size, grid_size, channels=None):
    """Inverse of `patchify`.

    Args:
        patches: tensor (batch, num_patches, patch_size * patch_size * channels).
        patch_size: int. Side of the square patches.
        grid_size: int or (grid_h, grid_w). Patches per column and per row.
        channels: int. Channels per pixel; inferred from the last axis when None.

    Returns:
        Tensor (batch, grid_h * patch_size, grid_w * patch_size, channels).
    """
    grid_h, grid_w = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    batch, num_patches, dim = ops.shape(patches)
    if channels is None:
        channels = dim // (patch_size * patch_size)
    if num_patches != grid_h * grid_w or dim != patch_size * patch_size * channels:
        raise ValueError(
            f"Cannot unpatchify shape {tuple(ops.shape(patches))} into a {grid_h}x{grid_w} grid "
            f"of {patch_size}x{patch_size}x{channels} patches; check patch_size and grid_size."
        )
    x = ops.reshape(patches, (batch, grid_h, grid_w, patch_size, patch_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, gh, p, gw, p, C]
    return ops.reshape(x, (batch, grid_h * patch_size, grid_w * patch_size, channels))
