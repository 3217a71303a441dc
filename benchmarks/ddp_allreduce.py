"""The cost torch DDP adds to a train step: averaging a preset's gradients over the ranks (torchrun + gloo/NCCL).

    KERAS_BACKEND=torch torchrun --standalone --nproc_per_node=2 benchmarks/ddp_allreduce.py \
        --preset=mae_vit_base_patch16

Builds the preset's MaskedAutoencoder, makes one gradient per trainable variable (random, the variables'
shapes and dtype) and times `keras_mae.distribution.torch_ddp.average_gradients` on them: the bucketed
all-reduce `TorchDataParallel` runs after every backward. Process 0 prints one JSON line: parameters, bytes,
buckets, world size and the median / min milliseconds over --repeats calls (after --warmup). Not a test:
numbers go to BENCHMARKS.md.
"""

import argparse
import json
import time

import keras
import numpy as np
import torch

import keras_mae
from keras_mae.distribution import setup_distribution, torch_ddp


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="mae_vit_base_patch16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    _, world = setup_distribution("ddp")
    model = keras_mae.MaskedAutoencoder.from_preset(args.preset)
    grads = [torch.randn(tuple(v.shape), device=v.value.device) for v in model.trainable_variables]
    times = []
    for i in range(args.warmup + args.repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch_ddp.average_gradients(grads)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(1000 * (time.perf_counter() - start))
    if torch.distributed.get_rank() == 0:
        nbytes = sum(g.numel() * g.element_size() for g in grads)
        print(json.dumps({"preset": args.preset, "world_size": world, "backend": torch.distributed.get_backend(),
                          "parameters": int(sum(g.numel() for g in grads)), "mebibytes": round(nbytes / 2**20, 1),
                          "buckets": len(list(torch_ddp._buckets(grads))),
                          "median_ms": round(float(np.median(times)), 1),
                          "min_ms": round(min(times), 1), "keras": keras.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
