"""Fixed 2-D sin-cos position embeddings, as facebookresearch/mae `util/pos_embed.py`."""

import numpy as np


def sincos_1d(dim, positions):
    """1-D sin-cos embedding (len(positions), dim): [sin(pos * omega) | cos(pos * omega)]."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim; received dim={dim}.")
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_position_embedding(grid_h, grid_w, dim, cls_token=True):
    """2-D sin-cos position embedding equal to the official `get_2d_sincos_pos_embed`.

    The official `np.meshgrid(grid_w, grid_h)` puts the column (w) coordinate
    first, so each row is [sin(w * omega), cos(w * omega), sin(h * omega),
    cos(h * omega)] with omega_k = 10000^(-k / (dim / 4)); rows follow the
    row-major patch grid. Non-square grids are supported.

    Args:
        grid_h: int. Patches per column.
        grid_w: int. Patches per row.
        dim: int. Embedding width, a multiple of 4.
        cls_token: bool. Prepend an all-zero row for the CLS token. Defaults to True.

    Returns:
        float32 numpy array (grid_h * grid_w [+ 1], dim).

    >>> sincos_position_embedding(2, 3, 8).shape
    (7, 8)
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs dim divisible by 4; received dim={dim}.")
    w, h = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
    emb = np.concatenate([sincos_1d(dim // 2, w), sincos_1d(dim // 2, h)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb.astype("float32")
