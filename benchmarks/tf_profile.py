"""Where a tensorflow-backend MAE train step's CPU time goes: a tf.profiler trace of `model.fit`, summed by op.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/tf_profile.py --overrides='{"norm_pix_loss": true}'

Without XLA (Keras's choice for TensorFlow on a CPU) the step is a graph of TensorFlow's own kernels, run by the
executor's threads. This compiles the step (one warm-up epoch), traces --steps more on random images, reads the
`.xplane.pb` the profiler writes, and prints the op time per step summed over the executor threads: by op type,
then the --top costliest single ops. Op time over two threads can exceed the step's wall time. The 2026-12-06 trace
of this kind found `StridedSliceGrad` at 22% of the step (BENCHMARKS.md, "TensorFlow's q/k/v split"). Not a
test: numbers go to BENCHMARKS.md.
"""

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def op_times(xplane_path):
    """{op name: picoseconds} over the host plane's executor threads (`tf_Compute/...`), executor bookkeeping out.

    Only outermost events count: an op's own events inside it (Eigen's `ParallelFor` in `BatchMatMulV2`, `Pack`,
    `GatherV2` and others) are part of its time, not more of it.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            busy_until = 0  # the end of the outermost op event so far on this thread
            for event in sorted(line.events, key=lambda event: (event.offset_ps, -event.duration_ps)):
                name = plane.event_metadata[event.metadata_id].name
                if name.startswith("ExecutorState::") or event.offset_ps < busy_until:
                    continue
                times[name] += event.duration_ps
                busy_until = event.offset_ps + event.duration_ps
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mae_vit_tiny_patch4_28")
    parser.add_argument("--overrides", default="{}", help='JSON constructor overrides, e.g. {"norm_pix_loss": true}')
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="steps traced")
    parser.add_argument("--top", type=int, default=25, help="single ops listed")
    parser.add_argument("--out", default="/tmp/mae_tf_profile",
                        help="each run traces into a new subdirectory here; nothing in it is deleted")
    args = parser.parse_args()
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        sys.exit(f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}: this profiles the tensorflow backend; "
                 "run it with KERAS_BACKEND=tensorflow")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf

    import keras_mae
    from keras_mae.models.presets import preset_config
    from keras_mae.optimizers import make_pretrain_optimizer

    config = {**preset_config(args.preset), **json.loads(args.overrides)}
    model = keras_mae.MaskedAutoencoder(**config, seed=0)
    # The pretraining app's optimizer, as benchmarks/train_step.py.
    model.compile(optimizer=make_pretrain_optimizer(model, 1e-4, weight_decay=0.05))
    images = np.random.default_rng(0).normal(size=(args.batch_size * args.steps, *model.image_size,
                                                   model.num_channels)).astype("float32")
    model.fit(images, batch_size=args.batch_size, epochs=1, verbose=0)  # traces and compiles the step
    os.makedirs(args.out, exist_ok=True)
    trace_dir = tempfile.mkdtemp(prefix="trace_", dir=args.out)
    start = time.perf_counter()
    tf.profiler.experimental.start(trace_dir)
    model.fit(images, batch_size=args.batch_size, epochs=1, verbose=0)
    wall_ms = (time.perf_counter() - start) * 1e3 / args.steps  # before stop(), which writes the trace
    tf.profiler.experimental.stop()
    times = op_times(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0])
    per_step = {name: ps / 1e9 / args.steps for name, ps in times.items()}
    by_type = collections.Counter()
    for name, ms in per_step.items():
        by_type[name.rsplit(":", 1)[-1]] += ms
    total = sum(per_step.values())
    print(f"{args.preset}, batch {args.batch_size}: {wall_ms:.0f} ms per step under the profiler, "
          f"op time {total:.0f} ms per step over the executor threads")
    print("| op type | ms per step | share of op time |\n|---|---|---|")
    for kind, ms in by_type.most_common():
        if ms >= 0.005 * total:
            print(f"| {kind} | {ms:.1f} | {ms / total:.1%} |")
    if args.top:
        print(f"\nThe {args.top} costliest ops:")
    for name, ms in collections.Counter(per_step).most_common(args.top):
        print(f"{ms:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
