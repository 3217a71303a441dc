"""Per-sample gather of tokens, the `torch.gather(x, 1, idx[..., None].repeat(...))` of the official code."""

from keras import ops


def batch_gather(tokens, indices):
    """Gathers tokens per sample along the sequence axis.

    One flat `take` over (batch * length) rows: a single gather kernel on every
    backend, with no index broadcast to the feature width.

    Args:
        tokens: tensor (batch, length, dim).
        indices: int tensor (batch, k), positions in [0, length).

    Returns:
        Tensor (batch, k, dim) with `out[b, i] = tokens[b, indices[b, i]]`.
    """
    batch, length, dim = ops.shape(tokens)
    k = ops.shape(indices)[1]
    offsets = ops.arange(batch, dtype="int32")[:, None] * length
    flat_indices = ops.reshape(ops.cast(indices, "int32") + offsets, (-1,))
    flat = ops.take(ops.reshape(tokens, (-1, dim)), flat_indices, axis=0)
    return ops.reshape(flat, (batch, k, dim))
