"""Memory soak: the smoke pretraining run for a few hundred steps, resident memory sampled as it goes.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/soak.py --steps=300 --every=25

The run is apps/pretrain.py itself with apps/configs/smoke.flags (a 1-block ViT-Tiny MAE on
Fashion-MNIST, batch 8), executed in this process through runpy, so its checkpoints (every epoch,
3 kept), JSON log, TensorBoard summaries and reconstruction images are soaked too. RSS is read every
`--every` optimizer steps from a hook on the app's TrainingLog callback. A leak shows as RSS still
climbing after warm-up (`--warmup_epochs`: compilation of the train step and of the epoch-end
callbacks, tf.data buffers, allocator pools). The verdict compares the medians of the first and second
halves of the samples after warm-up, as RSS moves by tens of MiB either way as the allocator takes and
returns pools. Not a test: numbers go to BENCHMARKS.md.
"""

import argparse
import os
import runpy
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "apps")


def rss_mib():
    """Resident set size of this process, MiB (psutil, else /proc/self/status)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="Optimizer steps in all.")
    parser.add_argument("--every", type=int, default=25, help="Steps between RSS samples.")
    parser.add_argument("--steps_per_epoch", type=int, default=30, help="Steps per epoch (one checkpoint each).")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--warmup_epochs", type=int, default=2,
                        help="Epochs before the baseline sample; epoch ends compile the checkpoint and summary code.")
    parser.add_argument("--tolerance_mib", type=float, default=20.0,
                        help="Growth between the halves after warm-up still called flat.")
    parser.add_argument("--workdir", default=None, help="Default: a temporary folder, removed afterwards.")
    args = parser.parse_args()
    epochs = -(-args.steps // args.steps_per_epoch)

    from keras_mae.callbacks import TrainingLog

    samples = [(0, rss_mib(), 0.0)]  # (step, RSS MiB, seconds)
    start = time.perf_counter()
    after_batch = TrainingLog.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        after_batch(self, batch, logs)
        step = int(self.model.optimizer.iterations)
        if step % args.every == 0:
            samples.append((step, rss_mib(), time.perf_counter() - start))

    TrainingLog.on_train_batch_end = on_train_batch_end
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or os.path.join(scratch, "run")
        sys.argv = [os.path.join(APPS, "pretrain.py"), f"--flagfile={os.path.join(APPS, 'configs', 'smoke.flags')}",
                    f"--workdir={workdir}", f"--epochs={epochs}", f"--steps_per_epoch={args.steps_per_epoch}",
                    f"--batch_size={args.batch_size}", "--verbose=0"]
        sys.path.insert(0, APPS)
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as exit_:
            if exit_.code:
                raise
    report(samples, args, epochs)


def report(samples, args, epochs):
    import keras

    # A sample at step k is taken before the end of the epoch that step k closes: the first one past the
    # warm-up epochs follows their epoch-end callbacks.
    warm = next((s for s in samples if s[0] > args.warmup_epochs * args.steps_per_epoch), samples[-1])
    print(f"\nSoak: {keras.backend.backend()} backend, smoke model, batch {args.batch_size}, {epochs} epochs of "
          f"{args.steps_per_epoch} steps, RSS every {args.every} steps")
    print(f"{'step':>6} {'seconds':>8} {'RSS MiB':>9} {'vs warm':>8}")
    for step, rss, seconds in samples:
        mark = "  <- warm-up done" if step == warm[0] else ""
        print(f"{step:>6} {seconds:>8.1f} {rss:>9.1f} {rss - warm[1]:>+8.1f}{mark}")
    after = [rss for step, rss, _ in samples if step >= warm[0]]
    half = len(after) // 2
    early, late = statistics.median(after[: max(half, 1)]), statistics.median(after[half:])
    print(f"After warm-up: {min(after):.1f} to {max(after):.1f} MiB; median of the first half {early:.1f}, of the "
          f"second half {late:.1f} ({late - early:+.1f} MiB over {samples[-1][0] - warm[0]} steps): "
          + ("flat." if late - early <= args.tolerance_mib else f"GROWING (> {args.tolerance_mib} MiB)."))


if __name__ == "__main__":
    main()
