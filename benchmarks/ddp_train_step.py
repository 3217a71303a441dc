"""MAE pretraining throughput under torch DDP: `MaskedAutoencoder.fit` with `--distribution=ddp`'s engine.

    KERAS_BACKEND=torch torchrun --standalone --nproc_per_node=1 benchmarks/ddp_train_step.py \
        --preset=mae_vit_base_patch16 --batch_size=256 --dtype_policy=mixed_bfloat16

Each rank trains on its share (`--batch_size / world size`) of one batch that stays on its device, through
`keras_mae.distribution.TorchDataParallel` (weights broadcast from rank 0, gradients averaged in 25 MiB
buckets after every backward). Rank 0 prints one JSON line: global images/s (median of the timed windows),
ms per step, peak device memory. Compare with `benchmarks/train_step.py --backends=torch` (one process, no
DDP) in the same run for what DDP costs. Not a test: numbers go to BENCHMARKS.md.
"""

import argparse
import itertools
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="mae_vit_tiny_patch4_28")
    parser.add_argument("--batch_size", type=int, default=256, help="global batch, split over the ranks")
    parser.add_argument("--dtype_policy", default="float32")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    import keras
    import numpy as np
    import torch

    import keras_mae
    from keras_mae.distribution import setup_distribution

    scope, world = setup_distribution("ddp")
    if args.batch_size % world:
        raise SystemExit(f"--batch_size={args.batch_size} must divide over the {world} ranks.")
    keras.config.set_dtype_policy(args.dtype_policy)
    with scope():
        model = keras_mae.MaskedAutoencoder.from_preset(args.preset, seed=0)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4, beta_2=0.95, weight_decay=0.05))
    rows = args.batch_size // world
    images = np.random.default_rng(torch.distributed.get_rank()).normal(
        size=(rows, *model.image_size, model.num_channels)).astype("float32")
    resident = keras.ops.convert_to_tensor(images)
    stamps = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])
            stamps.append(time.perf_counter())

    total = args.warmup + args.windows * args.steps
    batches = ((resident,) for _ in itertools.count())
    model.fit(batches, epochs=1, steps_per_epoch=total, callbacks=[Timer()], verbose=0, shuffle=False)
    windows = [(stamps[args.warmup - 1 + (i + 1) * args.steps] - stamps[args.warmup - 1 + i * args.steps]) / args.steps
               for i in range(args.windows)]
    seconds = statistics.median(windows)
    if torch.distributed.get_rank() == 0:
        cuda = torch.cuda.is_available()
        print(json.dumps({
            "preset": args.preset, "global_batch": args.batch_size, "world_size": world,
            "process_group": torch.distributed.get_backend(), "dtype_policy": args.dtype_policy,
            "images_per_s": round(args.batch_size / seconds, 1), "ms_per_step": round(1000 * seconds, 2),
            "peak_device_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "keras": keras.__version__}))


if __name__ == "__main__":
    main()
