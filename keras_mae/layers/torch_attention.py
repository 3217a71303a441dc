"""The torch backend's attention: one `F.scaled_dot_product_attention` on views of the fused qkv, as timm's.

`keras.ops.dot_product_attention` on torch converts and casts q, k and v,
checks per call whether flash attention applies, and on a CPU copies q, k and
v to contiguous tensors before `F.scaled_dot_product_attention`; its output,
transposed back, is copied once more by the reshape that joins the heads.
Here q, k and v are views of the fused qkv permuted to (3, batch, heads,
length, head_dim), as timm's `Attention` and Hugging Face's ViTMAE take them,
and torch picks its kernel (flash, memory-efficient, cuDNN or math) from those
strides. Same kernel family, same values to float rounding;
`tests/layers/test_torch_attention.py` checks outputs and gradients against
Keras's call.
"""

import keras


def applies():
    """True on the torch backend unless Keras's flash attention is switched off (then Keras's own call runs)."""
    return keras.backend.backend() == "torch" and keras.config.is_flash_attention_enabled() is not False


def attention(qkv, scale):
    """softmax(q k^T * scale) v per head of qkv (batch, length, 3, heads, head_dim); returns (batch, length, dim)."""
    import torch

    batch, length, _, heads, head_dim = qkv.shape
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=scale)
    return out.transpose(1, 2).reshape(batch, length, heads * head_dim)
