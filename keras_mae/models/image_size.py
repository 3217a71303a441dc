"""Image-size helpers shared by the encoder and the autoencoder."""


def image_shape(image_size):
    """(height, width) from an int or a pair, with a clear error otherwise."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    try:
        height, width = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be an int or (height, width). Received: image_size={image_size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive. Received: image_size={image_size!r}")
    return (height, width)


def grid_shape(image_size, patch_size):
    """(grid_h, grid_w) patches; a clear error when the size is not divisible."""
    height, width = image_shape(image_size)
    if int(patch_size) < 1:
        raise ValueError(f"patch_size must be a positive integer. Received: patch_size={patch_size}")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image_size {height}x{width} is not divisible by patch_size={patch_size}; "
            f"use an image_size that is a multiple of {patch_size}."
        )
    return (height // patch_size, width // patch_size)
