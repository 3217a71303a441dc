"""Can the decoder's attention (197 tokens) run in cuDNN's flash kernel on the GPU, and what would it save?

    KERAS_BACKEND=jax python3 benchmarks/gpu_attention.py --batch_size=256   # jax (and Keras for one variant), no TF

On the H200 (BENCHMARKS.md, "Run 4") cuDNN refused the decoder's sequence length ("Unsupported sequence length
Q 197, KV 197"), so Keras ran XLA's attention in all 8 decoder blocks of ViT-B/16 while the encoder's 50 tokens
ran in cuDNN. jax's cuDNN path can take padded sequences (`query_seq_lengths` / `key_value_seq_lengths`, cuDNN's
PADDING mask), so the tokens could be padded to a length it accepts, the padded keys masked and the padded
query rows dropped: the same result for the real rows. This times, per call of forward + backward
(`jax.value_and_grad` with respect to q, k and v, one jitted function, bf16), on the decoder's shape and the
encoder's:

- `xla`: `jax.nn.dot_product_attention(implementation="xla")` on the real length (what runs now);
- `cudnn`: the same on the real length with `implementation="cudnn"` (the call that failed);
- `cudnn_padded_<T>`: padded to T tokens with the sequence lengths given (`xla_padded_198`: the same padding
  on XLA, which checks the padding itself on any device);
- `keras_mae`: the library's own call (`keras_mae/layers/jax_padded_attention.py`: 197 padded to 198 for cuDNN;
  needs Keras importable, KERAS_BACKEND=jax);
- and the largest difference of each one's output and gradients from `xla`'s on the real rows.

A variant that cuDNN refuses is reported with its error, not fatal. Not a test: numbers go to BENCHMARKS.md.
On a CPU only the `xla` variants run.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # keras_mae, for its variant

# (name, tokens, heads, head dim) of ViT-B/16's MAE at 224: encoder 50 visible tokens (75% masked, plus the class
# token), 12 heads of 64; decoder all 197 tokens, 16 heads of 32.
SHAPES = (("decoder", 197, 16, 32), ("encoder", 50, 12, 64))


def attention_step(implementation, length, padded):
    """A jitted (q, k, v, cotangent) -> (out, (dq, dk, dv)) over the first `length` of `padded` tokens."""

    def run(q, k, v, cotangent):
        def forward(q, k, v):
            if implementation == "keras_mae":  # the library's own call: padded by one for cuDNN
                from keras_mae.layers.jax_padded_attention import padded_attention

                out = padded_attention(q, k, v, q.shape[-1] ** -0.5)
                if out is None:
                    raise NotImplementedError("keras_mae's padded_attention was refused; Keras's own call would run")
            elif padded > length:
                pad = ((0, 0), (0, padded - length), (0, 0), (0, 0))
                q, k, v = (jnp.pad(t, pad) for t in (q, k, v))
                lengths = jnp.full((q.shape[0],), length, jnp.int32)
                out = jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                                   implementation=implementation)
                out = out[:, :length]
            else:
                out = jax.nn.dot_product_attention(q, k, v, implementation=implementation)
            return jnp.sum(out.astype(jnp.float32) * cotangent), out

        (_, out), grads = jax.value_and_grad(forward, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return out, grads

    return jax.jit(run)


def time_step(step, inputs, iterations):
    """Median seconds of one call, after two warm-up calls."""
    for _ in range(2):
        jax.block_until_ready(step(*inputs))
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        jax.block_until_ready(step(*inputs))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--pads", default="198,200,208,256", help="Padded lengths to try for the decoder.")
    args = parser.parse_args()
    print(json.dumps({"devices": [str(d) for d in jax.devices()], "jax": jax.__version__}), flush=True)
    keys = jax.random.split(jax.random.key(0), 4)
    for name, length, heads, head_dim in SHAPES:
        shape = (args.batch_size, length, heads, head_dim)
        inputs = [jax.random.normal(key, shape, jnp.bfloat16) for key in keys[:3]]
        inputs.append(jax.random.normal(keys[3], shape, jnp.float32))
        variants = [("xla", length), ("cudnn", length)]
        if name == "decoder":
            # xla padded: checks the padding itself (the real rows must not change), on any device
            variants += [("xla", length + 1)] + [("cudnn", int(p)) for p in args.pads.split(",") if int(p) > length]
            variants += [("keras_mae", length)]
        expected = None
        for implementation, padded in variants:
            label = implementation + (f"_padded_{padded}" if padded > length else "")
            row = {"shape": name, "tokens": length, "heads": heads, "head_dim": head_dim, "variant": label}
            try:
                step = attention_step(implementation, length, padded)
                outputs = jax.tree_util.tree_leaves(step(*inputs))
                row["ms"] = round(1000 * time_step(step, inputs, args.iterations), 3)
                if expected is None:
                    expected = outputs
                else:
                    row["max_difference"] = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                                                for a, b in zip(outputs, expected))
            except Exception as error:  # a refusal is a result here
                row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
