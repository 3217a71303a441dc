"""Multi-head scaled dot-product attention on a fused qkv projection, in each backend's fastest form."""

from keras import ops

from keras_mae.layers.fast_form import uses_fused_attention


def attention(qkv, num_heads):
    """softmax(q k^T / sqrt(head_dim)) v per head, as timm's `Attention` after its qkv projection.

    On torch and on accelerators this is `keras.ops.dot_product_attention` (a fused
    kernel: `F.scaled_dot_product_attention`, cuDNN or TPU flash attention). On
    jax / tensorflow CPU it is written out with heads moved next to the batch axis
    by one transpose of the fused qkv, which XLA:CPU runs faster than
    `jax.nn.dot_product_attention`'s separate transposes of q, k and v.

    Args:
        qkv: tensor (batch, length, 3 * dim), columns [q | k | v], each (num_heads, head_dim).
        num_heads: int.

    Returns:
        Tensor (batch, length, dim), heads concatenated.
    """
    batch, length, width = ops.shape(qkv)
    dim = width // 3
    head_dim = dim // num_heads
    qkv = ops.reshape(qkv, (batch, length, 3, num_heads, head_dim))
    if uses_fused_attention():
        out = ops.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], scale=head_dim**-0.5)
        return ops.reshape(out, (batch, length, dim))
    qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # [3, B, N, T, H]
    q, k, v = qkv[0] * head_dim**-0.5, qkv[1], qkv[2]
    logits = ops.cast(ops.matmul(q, ops.swapaxes(k, -1, -2)), "float32")  # softmax in float32, as Keras's
    out = ops.matmul(ops.cast(ops.softmax(logits, axis=-1), v.dtype), v)  # [B, N, T, H]
    return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (batch, length, dim))
