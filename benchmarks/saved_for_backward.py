"""What a train step keeps for its backward pass, per image: a CPU proxy for peak GPU memory.

For the activations that one image adds, nothing is computed: the MAE loss is traced at two batch sizes and the
difference is divided by the images between them, so weights, their bf16 copies and optimizer state drop out.

- torch backend and the HF reference: the tensors autograd saves (`torch.autograd.graph.saved_tensors_hooks`,
  each storage counted once), under `--dtype_policy` / `torch.autocast`. These are what a GPU holds at the end of
  the forward pass (BENCHMARKS.md compares them with the H200's measured peaks).
- jax: the residuals of the jaxpr (`jax.vjp`'s saved values) and the temporary bytes of the jitted loss and
  gradient as XLA:CPU compiles it. XLA:GPU fuses part of the residuals away, so both are upper bounds there;
  `--form=xla_accelerator` (default) traces the forms a GPU runs, except the fused attention, which falls back
  to XLA's on a CPU.

    .venv/bin/python benchmarks/saved_for_backward.py --implementation=reference   # torch, jax alike
    .venv/bin/python benchmarks/saved_for_backward.py --implementation=jax --written_gradients=false
"""

import argparse
import collections
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def token_counts(preset):
    """The encoder's and the decoder's sequence lengths in training (visible patches + 1, all patches + 1)."""
    from keras_mae.layers.random_masking import num_kept
    from keras_mae.models.presets import preset_config

    config = preset_config(preset)
    size = config["image_size"]
    height, width = (size, size) if isinstance(size, int) else size
    patches = (height // config["patch_size"]) * (width // config["patch_size"])
    return {num_kept(patches, config.get("mask_ratio", 0.75)) + 1, patches + 1}


def kind(shape, dtype, tokens):
    """`attention probabilities` for (..., L, L) tensors with L a sequence length in `tokens`, else the dtype."""
    return "attention probabilities" if len(shape) >= 2 and shape[-1] == shape[-2] in tokens else str(dtype)


def build(args):
    """The preset's MaskedAutoencoder (norm_pix_loss, as the pretraining recipe) under `--dtype_policy`."""
    import keras

    import keras_mae

    keras.config.set_dtype_policy(args.dtype_policy)
    return keras_mae.MaskedAutoencoder.from_preset(args.preset, norm_pix_loss=True)


def jax_bytes(args, batch):
    """`(bytes per kind of the jaxpr's residuals, XLA:CPU's temporary bytes)` of the loss and gradient at `batch`."""
    import jax
    import keras
    import numpy as np

    from keras_mae.layers import fast_form

    fast_form.WRITTEN_GRADIENTS = args.written_gradients
    if args.form:
        fast_form.fast_form = lambda: args.form
    model = build(args)
    height, width = model.encoder.image_size
    images = np.random.rand(batch, height, width, model.encoder.num_channels).astype("float32")
    model(images[:1])
    variables = model.trainable_variables
    noise = np.random.rand(batch, model.encoder.num_patches).astype("float32")

    def loss(values, x):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return model.compute_reconstruction_loss(x, training=True, noise=noise)

    values = [v.value for v in variables]
    _, backward = jax.vjp(loss, values, images)
    counts, tokens = collections.Counter(), token_counts(args.preset)
    for leaf in jax.tree_util.tree_leaves(backward):
        if hasattr(leaf, "nbytes"):
            counts[kind(leaf.shape, leaf.dtype, tokens)] += leaf.nbytes
    compiled = jax.jit(jax.value_and_grad(loss)).lower(values, images).compile()
    return counts, compiled.memory_analysis().temp_size_in_bytes


def torch_bytes(args, batch):
    """`(bytes per kind of the tensors autograd saves, None)` for one loss at `batch` (torch backend or reference)."""
    import torch

    counts, seen, tokens = collections.Counter(), set(), token_counts(args.preset)

    def pack(tensor):
        storage = tensor.untyped_storage()
        if not (tensor.requires_grad and tensor.is_leaf) and storage.data_ptr() not in seen:  # not a weight
            seen.add(storage.data_ptr())
            counts[kind(tuple(tensor.shape), tensor.dtype, tokens)] += storage.nbytes()
        return tensor

    if args.implementation == "reference":
        import transformers

        from benchmarks.train_step import official_init, reference_config
        from keras_mae.models.presets import preset_config

        config = {**preset_config(args.preset), "norm_pix_loss": True}  # as build()
        size = config["image_size"]
        model = official_init(transformers.ViTMAEForPreTraining(reference_config(config)), config).train()
        dtype = getattr(torch, args.dtype_policy.replace("mixed_", ""))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast(
                "cpu", dtype=dtype, enabled=args.dtype_policy != "float32"):
            model(pixel_values=torch.randn(batch, config["num_channels"], size, size)).loss.backward()
    else:
        model = build(args)
        images = torch.randn(batch, *model.encoder.image_size, model.encoder.num_channels)
        model(images[:1])
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            model.compute_reconstruction_loss(images, training=True).backward()
    return counts, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--implementation", default="jax", choices=["jax", "torch", "reference"])
    parser.add_argument("--preset", default="mae_vit_base_patch16")
    parser.add_argument("--dtype_policy", default="mixed_bfloat16")
    parser.add_argument("--form", default="xla_accelerator", help="jax: the layers' form (keras_mae/layers/fast_form.py)")
    parser.add_argument("--written_gradients", default="true", choices=["true", "false"])
    parser.add_argument("--batch_sizes", default="2,4")
    args = parser.parse_args()
    args.written_gradients = args.written_gradients == "true"
    os.environ["KERAS_BACKEND"] = "jax" if args.implementation == "jax" else "torch"
    small, large = map(int, args.batch_sizes.split(","))
    measure = jax_bytes if args.implementation == "jax" else torch_bytes
    (before, temp_before), (after, temp_after) = measure(args, small), measure(args, large)

    def per_image(a, b):
        return (b - a) / (large - small) / 2**20

    kinds = {k: per_image(before[k], after[k]) for k in sorted(set(before) | set(after))}
    parts = ", ".join(f"{k} {v:.1f}" for k, v in kinds.items())
    xla = "" if temp_before is None else f"; XLA:CPU temp {per_image(temp_before, temp_after):.1f} MiB per image"
    print(f"{args.implementation} {args.preset} {args.dtype_policy}: kept for the backward pass "
          f"{sum(kinds.values()):.1f} MiB per image ({parts}){xla}")


if __name__ == "__main__":
    main()
