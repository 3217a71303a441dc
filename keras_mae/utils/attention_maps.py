"""Attention maps from an encoder's attention probabilities: the CLS token's attention and attention rollout.

`ViTEncoder(images, return_attention=True)` gives one (batch, num_heads, 1 + n, 1 + n) array per block; these
turn them into (batch, grid_h, grid_w) maps over the patches, and draw them over the images.
"""

import numpy as np

from keras_mae.data.normalization import to_uint8

HEAD_FUSIONS = ("mean", "max", "min")


def cls_attention(probabilities, grid_size):
    """What the CLS token attends to in one block, per head: (batch, num_heads, grid_h, grid_w).

    Args:
        probabilities: (batch, num_heads, 1 + n, 1 + n) attention probabilities of one block.
        grid_size: (grid_h, grid_w) with grid_h * grid_w = n.

    >>> p = np.full((1, 2, 5, 5), 0.2)
    >>> cls_attention(p, (2, 2)).shape
    (1, 2, 2, 2)
    """
    p = np.asarray(probabilities, "float32")
    return p[:, :, 0, 1:].reshape(p.shape[0], p.shape[1], *grid_size)


def attention_rollout(attention, grid_size, head_fusion="mean", discard_ratio=0.0):
    """Attention rollout (Abnar & Zuidema 2020): how much each patch flows into the CLS token over all blocks.

    Per block the heads are fused (`head_fusion`), the weakest `discard_ratio` of each row's links to the patches
    are dropped, the identity is added for the residual connection and the rows are renormalised; the blocks'
    matrices are multiplied, first block rightmost, and the CLS row is read over the patches.

    Args:
        attention: list of (batch, num_heads, 1 + n, 1 + n) arrays, one per block in order.
        grid_size: (grid_h, grid_w).
        head_fusion: "mean", "max" or "min" over heads. Defaults to "mean".
        discard_ratio: float in [0, 1). Defaults to 0.

    Returns:
        (batch, grid_h, grid_w) array, scaled to a maximum of 1 per image.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}. Received: head_fusion={head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), e.g. 0.9. Received: discard_ratio={discard_ratio}")
    if not attention:
        raise ValueError("attention is empty: an encoder with at least one block is needed for a rollout.")
    rollout = None
    for probabilities in attention:
        a = getattr(np, head_fusion)(np.asarray(probabilities, "float64"), axis=1)  # [B, T, T]
        if discard_ratio:
            patches = a[:, :, 1:]
            cut = np.quantile(patches, discard_ratio, axis=-1, keepdims=True)
            a = np.concatenate([a[:, :, :1], np.where(patches < cut, 0.0, patches)], axis=-1)
        a = a + np.eye(a.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        rollout = a if rollout is None else a @ rollout
    flow = rollout[:, 0, 1:].reshape(rollout.shape[0], *grid_size)
    return (flow / flow.max(axis=(1, 2), keepdims=True)).astype("float32")


def overlay(images, maps, mean, std, patch_size, alpha=0.5, colormap="inferno"):
    """Each map, scaled to [0, 1] per image, drawn in `colormap` over its image: uint8 (batch, h, w, 3).

    Args:
        images: (batch, h, w, c) normalised images.
        maps: (batch, grid_h, grid_w); each cell covers one patch of `patch_size` pixels.
        mean, std: per-channel normalisation of the images.
        alpha: float. Weight of the map. Defaults to 0.5.
    """
    import matplotlib

    pixels = _rgb(images, mean, std).astype("float32") / 255.0
    maps = np.asarray(maps, "float32")
    low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    scaled = (maps - low) / np.maximum(high - low, 1e-12)
    scaled = np.repeat(np.repeat(scaled, patch_size, axis=1), patch_size, axis=2)  # one cell per patch
    heat = matplotlib.colormaps[colormap](scaled)[..., :3]
    return np.clip(((1.0 - alpha) * pixels + alpha * heat) * 255.0 + 0.5, 0, 255).astype("uint8")


def _rgb(images, mean, std):
    """Display pixels, uint8 (batch, h, w, 3): grey repeated, RGBA shown as RGB."""
    pixels = to_uint8(np.asarray(images), mean, std)
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]


def attention_grid(images, maps, mean, std, patch_size, gap=2):
    """One row per image: the image, then each of `maps` (a list of (batch, grid_h, grid_w)) over it; uint8."""
    panels = [_rgb(images, mean, std)] + [overlay(images, m, mean, std, patch_size) for m in maps]
    n, h, w, _ = panels[0].shape
    grid = np.full((n * (h + gap) - gap, len(panels) * (w + gap) - gap, 3), 255, "uint8")
    for row in range(n):
        for col, panel in enumerate(panels):
            grid[row * (h + gap) : row * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = panel[row]
    return grid
