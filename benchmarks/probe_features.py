"""Feature-extraction rate of the linear probe (`LinearProbe.extract_features`, mean pool) on the demo preset.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/probe_features.py --num_images=5120 --batch_size=512
    KERAS_BACKEND=torch .venv/bin/python benchmarks/probe_features.py --num_images=2048 --passes=2 \
        --dtype_policy=mixed_bfloat16

Random 28x28x1 inputs through a tf.data pipeline into the compiled predict path the app uses; one warm-up
batch, then the best of --passes timed passes over all images. Prints one JSON line with the encoder's forward
FLOP/s and the best matmul rate of the same process in the compute dtype (`benchmarks/train_step.py`'s
`matmul_peak`), so the rate can be read against what the machine's matmuls allow. Not a test: numbers go to
BENCHMARKS.md.
"""

import argparse
import json
import time

import os
import sys

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.train_step import blocks_flops, compute_dtype, matmul_peak  # noqa: E402


def forward_flops(encoder):
    """FLOPs of one image's encoder forward pass over all its tokens (multiply-add = 2 FLOPs)."""
    height, width = encoder.image_size
    p, c, d = encoder.patch_size, encoder.num_channels, encoder.hidden_dim
    num_patches = (height // p) * (width // p)
    return 2 * num_patches * p * p * c * d + blocks_flops(1 + num_patches, d, encoder.mlp_dim, encoder.num_layers)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=5120)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--dtype_policy", default="float32", choices=("float32", "mixed_bfloat16", "bfloat16"))
    parser.add_argument("--preset", default="mae_vit_tiny_patch4_28")
    args = parser.parse_args()
    if min(args.num_images, args.batch_size, args.passes) < 1:
        parser.error(f"--num_images, --batch_size and --passes must be >= 1. Received: {vars(args)}")

    keras.config.set_dtype_policy(args.dtype_policy)
    from keras_mae import ViTEncoder
    from keras_mae.data import without_autotune
    from keras_mae.models.linear_probe import LinearProbe

    keras.utils.set_random_seed(0)
    encoder = ViTEncoder.from_preset(args.preset)
    probe = LinearProbe(encoder, num_classes=10, pool="mean")
    shape = (args.num_images, *encoder.image_size, encoder.num_channels)
    images = np.random.default_rng(0).normal(size=shape).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(args.num_images))).batch(args.batch_size)
    dataset = without_autotune(dataset)  # as the app's make_eval_dataset: a pass ends without waiting on tf.data
    probe.extract_features(dataset.take(1), verbose=0)  # compile
    best = 0.0
    for _ in range(args.passes):
        start = time.perf_counter()
        probe.extract_features(dataset, verbose=0)
        best = max(best, args.num_images / (time.perf_counter() - start))
    gflops = best * forward_flops(encoder) / 1e9
    peak = matmul_peak("keras", compute_dtype(args.dtype_policy)) / 1e9
    print(json.dumps({"backend": keras.backend.backend(), "preset": args.preset, "dtype_policy": args.dtype_policy,
                      "batch_size": args.batch_size, "num_images": args.num_images, "images_per_s": round(best, 1),
                      "model_gflops": round(gflops, 1), "matmul_peak_gflops": round(peak, 1),
                      "mfu": round(gflops / peak, 3)}))


if __name__ == "__main__":
    main()
