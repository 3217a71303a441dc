"""Where a jax-backend MAE train step's GPU time goes: a jax profiler trace of `model.fit`, summed by kernel.

    KERAS_BACKEND=jax python benchmarks/gpu_profile.py --preset=mae_vit_base_patch16 --batch_size=256 \
        --dtype_policy=mixed_bfloat16 --out=/tmp/profile

Compiles the train step (one warm-up `fit`), then traces --steps more steps on one device-resident batch and
reads the Perfetto trace jax writes: the GPU kernels' total time per step, grouped (matmuls, attention,
fusions of elementwise and normalisation work, reductions, gathers / scatters, copies), the 25 costliest
kernels, and the step's wall time, so "GPU idle" is wall minus kernel time. Prints one JSON object and writes
it to OUT/profile_summary.json. Not a test: numbers go to BENCHMARKS.md.
"""

import argparse
import collections
import glob
import gzip
import itertools
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GROUPS = (  # first match wins; kernel names as XLA:GPU, cuBLAS and cuDNN name them
    ("convolution", ("fprop", "implicit_gemm", "conv")),  # the patch embedding
    ("attention", ("flash", "fmha", "cudnn", "attention", "sdpa")),
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul", "dot")),
    ("gather_scatter", ("gather", "scatter", "dynamic_slice", "dynamic-slice", "dynamic_update")),
    ("reduction", ("reduce", "reduction")),
    ("copy", ("memcpy", "memset", "copy", "transpose")),
    ("fusion", ("fusion", "loop_", "input_", "elementwise", "convert")),
)


def group_of(name):
    lowered = name.lower()
    for group, keys in GROUPS:
        if any(key in lowered for key in keys):
            return group
    return "other"


def kernel_times(trace_path):
    """{kernel name: total microseconds} of the trace's GPU-device events, and the GPU process names."""
    with gzip.open(trace_path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    gpu = {pid for pid, name in names.items() if "gpu" in name.lower() and "host" not in name.lower()}
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("pid") in gpu and "dur" in event:
            totals[event["name"]] += float(event["dur"])
    return totals, sorted(names[pid] for pid in gpu), sorted(set(names.values()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="mae_vit_base_patch16")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--dtype_policy", default="mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="/tmp/mae_profile")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import keras
    import numpy as np

    import keras_mae
    from keras_mae.models.presets import PRESETS

    keras.config.set_dtype_policy(args.dtype_policy)
    config = dict(PRESETS[args.preset]) if args.preset in PRESETS else {}
    model = keras_mae.MaskedAutoencoder.from_preset(args.preset, seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4, beta_2=0.95, weight_decay=0.05))
    images = np.random.default_rng(0).normal(size=(args.batch_size, *model.image_size, model.num_channels))
    resident = keras.ops.convert_to_tensor(images.astype("float32"))
    batches = ((resident,) for _ in itertools.count())
    model.fit(batches, epochs=1, steps_per_epoch=5, verbose=0, shuffle=False)  # compile + warm up

    class Stamps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])
            stamps.append(time.perf_counter())

    stamps = []
    os.makedirs(args.out, exist_ok=True)
    with jax.profiler.trace(args.out, create_perfetto_trace=True):
        start = time.perf_counter()
        model.fit(batches, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False, callbacks=[Stamps()])
    wall_ms = 1000 * (stamps[-1] - start) / args.steps
    traces = sorted(glob.glob(os.path.join(args.out, "**", "perfetto_trace.json.gz"), recursive=True))
    summary = {"preset": args.preset, "batch_size": args.batch_size, "dtype_policy": args.dtype_policy,
               "steps": args.steps, "wall_ms_per_step": round(wall_ms, 2), "config": config or None,
               "jax": jax.__version__, "keras": keras.__version__, "devices": [str(d) for d in jax.devices()]}
    if not traces:
        summary["error"] = f"no perfetto_trace.json.gz under {args.out}"
    else:
        totals, gpu_processes, all_processes = kernel_times(traces[-1])
        per_step = {name: us / args.steps / 1000 for name, us in totals.items()}
        groups = collections.Counter()
        for name, ms in per_step.items():
            groups[group_of(name)] += ms
        kernel_ms = sum(per_step.values())
        summary.update({
            "trace": traces[-1], "gpu_processes": gpu_processes, "processes": all_processes,
            "kernel_ms_per_step": round(kernel_ms, 2), "gpu_idle_ms_per_step": round(wall_ms - kernel_ms, 2),
            "groups_ms_per_step": {k: round(v, 2) for k, v in groups.most_common()},
            "distinct_kernels": len(totals),
            "top_kernels_ms_per_step": [[name[:120], round(ms, 3), group_of(name)]
                                        for name, ms in collections.Counter(per_step).most_common(25)],
        })
    print(json.dumps(summary, indent=1))
    with open(os.path.join(args.out, "profile_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
