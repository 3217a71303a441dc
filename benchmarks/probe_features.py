"""Feature-extraction rate of the linear probe (`LinearProbe.extract_features`, mean pool) on the demo preset.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/probe_features.py --num_images=5120 --batch_size=512
    KERAS_BACKEND=torch .venv/bin/python benchmarks/probe_features.py --num_images=2048 --passes=2 \
        --dtype_policy=mixed_bfloat16

Random 28x28x1 inputs through a tf.data pipeline into the compiled predict path the app uses; one warm-up
batch, then the best of --passes timed passes over all images. Prints one JSON line. Not a test: numbers go to
BENCHMARKS.md.
"""

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf


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
    from keras_mae.models.linear_probe import LinearProbe

    keras.utils.set_random_seed(0)
    encoder = ViTEncoder.from_preset(args.preset)
    probe = LinearProbe(encoder, num_classes=10, pool="mean")
    shape = (args.num_images, *encoder.image_size, encoder.num_channels)
    images = np.random.default_rng(0).normal(size=shape).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(args.num_images))).batch(args.batch_size)
    probe.extract_features(dataset.take(1), verbose=0)  # compile
    best = 0.0
    for _ in range(args.passes):
        start = time.perf_counter()
        probe.extract_features(dataset, verbose=0)
        best = max(best, args.num_images / (time.perf_counter() - start))
    print(json.dumps({"backend": keras.backend.backend(), "preset": args.preset, "dtype_policy": args.dtype_policy,
                      "batch_size": args.batch_size, "num_images": args.num_images, "images_per_s": round(best, 1)}))


if __name__ == "__main__":
    main()
