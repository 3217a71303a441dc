"""Reconstructions in image space, as the official visualisation demo (`MaskedAutoencoder.reconstruct`)."""

from keras import ops

from keras_mae.layers.patching import unpatchify


def reconstruct(model, images, noise=None):
    """Masked input, reconstruction and reconstruction with the visible patches pasted back.

    norm_pix predictions are un-normalised with each target patch's own
    mean and variance.

    Args:
        model: `MaskedAutoencoder`.
        images: (batch, height, width, num_channels) normalised images, or
            uint8 pixels (normalised with the model's `mean` and `std`).
        noise: optional (batch, num_patches) noise fixing the masks.

    Returns:
        Dict of (batch, height, width, num_channels) tensors, in the
        images' normalised space: `masked` (removed patches zeroed),
        `reconstruction` (every patch predicted), `pasted` (visible
        patches from the input, removed ones predicted), and `mask`
        (1 on removed pixels).
    """
    images = ops.cast(model.normalize_inputs(ops.convert_to_tensor(images)), "float32")
    outputs = model(images, noise=noise, training=False)
    pred = ops.cast(outputs["pred"], "float32")
    if model.norm_pix_loss:
        _, mean, var = model.patch_targets(images)
        pred = pred * ops.sqrt(var + 1e-6) + mean
    patch_dim = model.patch_size**2 * model.num_channels
    to_image = lambda x: unpatchify(x, model.patch_size, model.grid_size, model.num_channels)  # noqa: E731
    reconstruction = to_image(pred)
    mask = to_image(ops.repeat(outputs["mask"][..., None], patch_dim, axis=-1))
    return {
        "masked": images * (1 - mask),
        "reconstruction": reconstruction,
        "pasted": images * (1 - mask) + reconstruction * mask,
        "mask": mask,
    }
