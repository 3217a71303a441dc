"""Multi-head scaled dot-product attention on a fused qkv projection, in each backend's fastest form."""

from keras import ops

from keras_mae.layers import fast_form, jax_padded_attention, torch_attention
from keras_mae.layers.fast_form import uses_fused_attention


def attention(qkv, num_heads):
    """softmax(q k^T / sqrt(head_dim)) v per head, as timm's `Attention` after its qkv projection.

    On torch this is `F.scaled_dot_product_attention` on views of qkv
    (`torch_attention`, as timm's). On accelerators it is
    `keras.ops.dot_product_attention` (cuDNN or TPU flash attention; on jax GPUs
    an odd number of tokens is padded by one for cuDNN, see
    `jax_padded_attention`). On
    jax / tensorflow CPU it is written out with heads moved next to the batch axis
    by one transpose of the fused qkv, which XLA:CPU runs faster than
    `jax.nn.dot_product_attention`'s separate transposes of q, k and v, with a
    written-out gradient that keeps q, k and v and recomputes the
    probabilities, as flash attention does (`_recomputing_attention`).

    q, k and v are taken apart with `ops.unstack`, whose gradient on TensorFlow
    and torch is one stack. Indexing (`qkv[0]`) gave TensorFlow a
    `StridedSliceGrad` per slice, each filling a zero tensor of qkv's full
    shape: 22% of a demo train step's CPU time (BENCHMARKS.md).

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
        if torch_attention.applies():
            return torch_attention.attention(qkv, head_dim**-0.5)
        query, key, value = ops.unstack(qkv, 3, axis=2)
        out = None
        if jax_padded_attention.applies(query):
            out = jax_padded_attention.padded_attention(query, key, value, head_dim**-0.5)
        if out is None:
            out = ops.dot_product_attention(query, key, value, scale=head_dim**-0.5)
        return ops.reshape(out, (batch, length, dim))
    return _written_out(qkv, num_heads)[0]


def attention_with_probabilities(qkv, num_heads):
    """`attention`, and the attention probabilities it applied (the written-out form on every backend).

    Args:
        qkv: tensor (batch, length, 3 * dim), columns [q | k | v].
        num_heads: int.

    Returns:
        `(out, probabilities)`: out (batch, length, dim) as `attention`'s; probabilities
        (batch, num_heads, length, length) in float32, rows (queries) summing to 1, as timm's `attn` after
        its softmax and Hugging Face's `output_attentions`.
    """
    batch, length, width = ops.shape(qkv)
    head_dim = width // 3 // num_heads
    return _written_out(ops.reshape(qkv, (batch, length, 3, num_heads, head_dim)), num_heads, True)


def _written_out(qkv, num_heads, with_probabilities=False):
    """(out, probabilities) of qkv (batch, length, 3, num_heads, head_dim); probabilities None unless asked for."""
    batch, length, _, _, head_dim = ops.shape(qkv)
    qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # [3, B, N, T, H]
    q, k, v = ops.unstack(qkv, 3, axis=0)
    if with_probabilities or not fast_form.uses_written_gradients():
        out, probabilities = _attention_forward(q, k, v)
    else:
        out, probabilities = _recomputing_attention(q, k, v), None
    return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (batch, length, num_heads * head_dim)), probabilities


def _attention_forward(q, k, v):
    """(softmax(q k^T / sqrt(head_dim)) v, the softmax) for q, k, v (B, N, T, H); the softmax in float32."""
    probabilities = _probabilities(q, k)[1]
    return ops.matmul(ops.cast(probabilities, v.dtype), v), probabilities


def _probabilities(q, k):
    """(q / sqrt(head_dim), softmax(q k^T / sqrt(head_dim)) in float32, as Keras's)."""
    q = q * ops.shape(q)[-1] ** -0.5
    return q, ops.softmax(ops.cast(ops.matmul(q, ops.swapaxes(k, -1, -2)), "float32"), axis=-1)


@ops.custom_gradient
def _recomputing_attention(q, k, v):
    """`_attention_forward` with a written-out gradient that keeps q, k and v only, as flash attention's does.

    The backward pass recomputes the probabilities from q and k (one more q k^T
    and softmax) instead of keeping them: in a ViT-B/16 MAE in bf16, autodiff
    keeps 30 MiB per image of float32 and bf16 probabilities (BENCHMARKS.md).
    Each step is autodiff's of the forward form, in the same dtypes.
    `keras.remat` keeps as little, but reruns the whole forward (p v too) and
    then autodiff: the demo step on jax was 18% slower with it (BENCHMARKS.md).
    """
    out = _attention_forward(q, k, v)[0]

    def gradient(*args, upstream=None):
        d_out = args[0] if upstream is None else upstream
        scale = ops.shape(q)[-1] ** -0.5
        scaled_q, weights = _probabilities(q, k)
        d_v = ops.matmul(ops.swapaxes(ops.cast(weights, v.dtype), -1, -2), d_out)
        d_weights = ops.cast(ops.matmul(d_out, ops.swapaxes(v, -1, -2)), "float32")
        d_logits = weights * (d_weights - ops.sum(d_weights * weights, axis=-1, keepdims=True))
        d_logits = ops.cast(d_logits, q.dtype)
        d_q = ops.matmul(d_logits, k) * scale
        d_k = ops.matmul(ops.swapaxes(d_logits, -1, -2), scaled_q)
        return d_q, d_k, d_v

    return out, gradient
