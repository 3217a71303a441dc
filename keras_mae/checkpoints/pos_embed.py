"""Position embeddings at another image size, as facebookresearch/mae `util/pos_embed.py interpolate_pos_embed`.

Learned tables are resized bicubically exactly as the official code does with
`torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`,
re-implemented in numpy (no torch needed); fixed sin-cos tables are recomputed
for the new grid instead, which interpolation would only approximate.
"""

import math

import numpy as np

from keras_mae.layers.position_embedding import sincos_position_embedding

# torch's cubic convolution coefficient (upsample_bicubic2d), not the -0.5 of PIL or OpenCV.
CUBIC_A = -0.75
# A table this close to sin-cos is sin-cos stored in float16 / bfloat16: recompute it exactly.
SINCOS_ATOL = 1e-2


def _cubic_weights(in_size, out_size):
    """(out_size, in_size) matrix of torch's bicubic resampling along one axis (align_corners=False)."""
    scale = in_size / out_size
    source = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5  # not clamped at 0 for cubic
    first = np.floor(source).astype(np.int64)
    t = source - first
    a = CUBIC_A
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731, |x| <= 1
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731, 1 < |x| < 2
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    for offset, coefficient in enumerate((far(t + 1), near(t), near(1 - t), far(2 - t))):
        # torch reads out-of-range taps from the border pixel (upsample_get_value_bounded).
        np.add.at(weights, (rows, np.clip(first - 1 + offset, 0, in_size - 1)), coefficient)
    return weights


def bicubic_resize(grid, size):
    """Resizes a (height, width, channels) array as torch's bicubic `F.interpolate`.

    Args:
        grid: array (height, width, channels).
        size: (new_height, new_width).

    Returns:
        float array (new_height, new_width, channels), in `grid`'s dtype.

    >>> bicubic_resize(np.ones((2, 3, 4)), (5, 7)).shape
    (5, 7, 4)
    """
    grid = np.asarray(grid)
    rows = _cubic_weights(grid.shape[0], int(size[0]))
    cols = _cubic_weights(grid.shape[1], int(size[1]))
    out = np.einsum("ah,hwc,bw->abc", rows, grid.astype(np.float64), cols)
    return out.astype(grid.dtype if np.issubdtype(grid.dtype, np.floating) else np.float32)


def is_sincos(pos_embed, grid_size, num_extra_tokens=1):
    """Whether a (1, extra + L, D) table is the fixed 2-D sin-cos embedding of `grid_size` (to 1e-2)."""
    table = np.asarray(pos_embed, np.float64).reshape(-1, np.shape(pos_embed)[-1])[num_extra_tokens:]
    grid_h, grid_w = grid_size
    dim = table.shape[-1]
    if dim % 4 or table.shape[0] != grid_h * grid_w:
        return False
    expected = sincos_position_embedding(grid_h, grid_w, dim, cls_token=False)
    return bool(np.allclose(table, expected, rtol=0, atol=SINCOS_ATOL))


def source_grid(pos_embed, num_extra_tokens=1):
    """The patch grid a checkpoint's position table was made for.

    A sin-cos table tells its grid (non-square included); otherwise the grid is
    taken square, as the official code does.

    Args:
        pos_embed: array (1, extra + L, D).
        num_extra_tokens: int. Leading rows that are not patches (the CLS row). Defaults to 1.

    Returns:
        (grid_h, grid_w), or None when L is neither sin-cos nor a square.
    """
    length = np.shape(pos_embed)[-2] - num_extra_tokens
    for grid_h in range(1, length + 1):
        if length % grid_h == 0 and is_sincos(pos_embed, (grid_h, length // grid_h), num_extra_tokens):
            return (grid_h, length // grid_h)
    side = math.isqrt(length)
    return (side, side) if side * side == length else None


def resize_pos_embed(pos_embed, grid_size, old_grid_size=None, num_extra_tokens=1):
    """A position table for another patch grid, the official `interpolate_pos_embed` generalised.

    The extra (CLS) rows are kept as they are. A sin-cos table is recomputed for
    the new grid; a learned one is resized bicubically on its (H, W, D) grid,
    equal to the official torch code (non-square grids included).

    Args:
        pos_embed: array (1, extra + old_h * old_w, D) in the official layout.
        grid_size: (grid_h, grid_w). The new patch grid.
        old_grid_size: (old_h, old_w) or None. The table's grid; inferred by `source_grid` when None.
        num_extra_tokens: int. Defaults to 1 (the CLS token).

    Returns:
        float array (1, extra + grid_h * grid_w, D), in `pos_embed`'s dtype.

    >>> from keras_mae.layers.position_embedding import sincos_position_embedding
    >>> resize_pos_embed(sincos_position_embedding(2, 2, 8)[None], (3, 4)).shape
    (1, 13, 8)
    """
    pos_embed = np.asarray(pos_embed)
    dim = pos_embed.shape[-1]
    table = pos_embed.reshape(-1, dim)
    old_grid_size = tuple(old_grid_size or source_grid(pos_embed, num_extra_tokens) or ())
    if len(old_grid_size) != 2 or old_grid_size[0] * old_grid_size[1] != table.shape[0] - num_extra_tokens:
        raise ValueError(
            f"Cannot tell the patch grid of a position table with {table.shape[0] - num_extra_tokens} positions "
            f"(old_grid_size={old_grid_size or None}); load it at its own image size, or pass old_grid_size."
        )
    grid_size = tuple(int(g) for g in grid_size)
    extra, patches = table[:num_extra_tokens], table[num_extra_tokens:]
    if grid_size == old_grid_size:
        return pos_embed.copy()
    if is_sincos(pos_embed, old_grid_size, num_extra_tokens):
        patches = sincos_position_embedding(*grid_size, dim, cls_token=False).astype(pos_embed.dtype)
    else:
        patches = bicubic_resize(patches.reshape(*old_grid_size, dim), grid_size).reshape(-1, dim)
    return np.concatenate([extra, patches], axis=0)[None]
