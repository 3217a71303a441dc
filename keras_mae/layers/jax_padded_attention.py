"""jax on a GPU: cuDNN flash attention for an odd number of tokens, padded by one token that no query sees.

ViT-B/16's MAE decoder attends over 197 tokens (196 patches and the class
token); so does a fine-tuned ViT. On the H200 (BENCHMARKS.md, "Run 4"), jax's
cuDNN flash attention refused that length in training ("Unsupported sequence
length Q 197, KV 197"), and Keras fell back to XLA's attention in all 8 decoder
blocks: the (batch, heads, 197, 197) logits and float32 probabilities written
to memory and kept for the backward pass, where the encoder's 50 tokens run in
flash kernels. cuDNN takes sequences with given lengths (its PADDING mask), so
this appends one zero token to q, k and v, gives the real length as both the
query and the key/value length (the padded key gets no weight from any query),
and drops the padded query row from the output: the same result for every real
token. `tests/layers/test_jax_padded_attention.py` checks outputs, gradients
and whole train steps against the unpadded call on the CPU through XLA, which
takes the same arguments.

jax refuses every odd length in training: its cuDNN path stands a zero-size
placeholder in for a missing bias, so its "odd length with a bias" check always
fires; an even length passes. This runs on NVIDIA GPUs of compute capability 8.0
(Ampere) or later only, as Keras's own cuDNN check requires. Where jax refuses
the padded call too at trace time (no cuDNN, an unsupported head size),
`padded_attention` warns once and returns None, and Keras's own call runs.
`keras.config.disable_flash_attention()` turns this off with the rest of Keras's
flash attention. `TRACE_COUNTS` says how often each happened (the benchmarks
report it).
"""

import warnings

import keras

# The benchmarks' switch (`benchmarks/train_step.py --backends=jax+unpadded`): False leaves every length to Keras.
ENABLED = True
# jax.nn.dot_product_attention's implementation; the tests set None (XLA) to run this on the CPU.
IMPLEMENTATION = "cudnn"
HALF_DTYPES = ("bfloat16", "float16")  # cuDNN's flash attention takes no float32
# How many attention calls were traced padded, and how many cuDNN refused (then Keras's own call ran).
TRACE_COUNTS = {"padded": 0, "refused": 0}


def applies(query):
    """True where `attention` should call `padded_attention` for this query (batch, length, heads, head_dim).

    That is: the jax backend on an NVIDIA GPU of compute capability 8.0 or later, an odd (known)
    length, a 16-bit compute dtype and Keras's flash attention not disabled.

    >>> applies(keras.ops.zeros((1, 3, 1, 8), "bfloat16")) == (keras.backend.backend() == "jax" and _on_gpu())
    True
    """
    if not ENABLED or keras.backend.backend() != "jax" or keras.config.is_flash_attention_enabled() is False:
        return False
    length = query.shape[1]
    return (isinstance(length, int) and length % 2 == 1
            and keras.backend.standardize_dtype(query.dtype) in HALF_DTYPES and _on_gpu())


def padded_attention(query, key, value, scale):
    """softmax(q k^T * scale) v per head, computed on one more token than given; None where refused.

    Args:
        query, key, value: jax arrays (batch, length, heads, head_dim), all of one length.
        scale: float multiplying the logits.

    Returns:
        (batch, length, heads, head_dim) as `jax.nn.dot_product_attention(query, key, value, scale=scale)`,
        or None where `IMPLEMENTATION` refuses the padded shapes at trace time.
    """
    import jax
    import jax.numpy as jnp

    batch, length = query.shape[:2]
    pad = ((0, 0), (0, 1), (0, 0), (0, 0))
    query, key, value = (jnp.pad(t, pad) for t in (query, key, value))
    lengths = jnp.full((batch,), length, jnp.int32)
    try:
        out = jax.nn.dot_product_attention(query, key, value, scale=scale, query_seq_lengths=lengths,
                                           key_value_seq_lengths=lengths, implementation=IMPLEMENTATION)
    except (NotImplementedError, RuntimeError, ValueError) as error:  # jax's cuDNN checks, raised while tracing
        TRACE_COUNTS["refused"] += 1
        if TRACE_COUNTS["refused"] == 1:
            warnings.warn(f"cuDNN refused attention over {length} tokens padded to {length + 1} ({error}); "
                          "Keras's own attention runs instead", stacklevel=2)
        return None
    TRACE_COUNTS["padded"] += 1
    return out[:, :length]


def _on_gpu():
    """True on an NVIDIA GPU of compute capability 8.0 (Ampere) or later, where cuDNN has flash attention."""
    import jax

    device = jax.devices()[0]
    if device.platform != "gpu":
        return False
    try:
        return int(str(device.compute_capability).split(".")[0]) >= 8
    except (AttributeError, ValueError):  # not CUDA (ROCm): no cuDNN
        return False
