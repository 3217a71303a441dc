"""Linear-probe accuracy of MAE pretraining on Fashion-MNIST for a given pretraining time budget.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/fashion_mnist_probe.py --minutes=10

Pretrains with the demo settings (apps/configs/fashion_mnist.flags) for as many steps as fit in --minutes
(measured by a short calibration run: epochs, or shorter pseudo-epochs when less than 10 epochs fit, with a 5%
warm-up as the paper's 40 of 800 epochs), then linear-probes the pretrained and a randomly initialised
encoder of the same config on the 10,000 test images (apps/configs/linprobe_fashion_mnist.flags with
--cache_features). Prints a markdown table row and appends it to <workdir>/probe_rows.md. Not a test.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_IMAGES = 60000
FALLBACK_FLAGS = ["--preset=mae_vit_tiny_patch4_28", "--norm_pix_loss", "--dataset=fashion_mnist", "--batch_size=256",
                  "--base_lr=1e-3", "--weight_decay=0.05", "--seed=0"]

flags.DEFINE_float("minutes", 10.0, "Pretraining time budget (wall clock, compilation included).")
flags.DEFINE_string("workdir", None, "Where the runs go; defaults to /tmp/fashion_mnist_probe_<minutes>min_<backend>.")
flags.DEFINE_string("pretrain_flagfile", os.path.join(ROOT, "apps/configs/fashion_mnist.flags"), "Pretraining settings.")
flags.DEFINE_string("probe_flagfile", os.path.join(ROOT, "apps/configs/linprobe_fashion_mnist.flags"), "Probe settings.")
flags.DEFINE_list("probe_args", [], "Extra linear_probe.py flags, e.g. --probe_args=--epochs=10.")
FLAGS = flags.FLAGS


def run(script, args):
    """Runs an app (same interpreter and KERAS_BACKEND); returns its wall time in seconds."""
    command = [sys.executable, os.path.join(ROOT, "apps", script), *args]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def pretrain_flags():
    if os.path.isfile(FLAGS.pretrain_flagfile):
        return [f"--flagfile={FLAGS.pretrain_flagfile}"]
    print(f"{FLAGS.pretrain_flagfile} not found; using {' '.join(FALLBACK_FLAGS)}")
    return list(FALLBACK_FLAGS)


def batch_size(base):
    """--batch_size as the flag file sets it (the last one wins), else 256."""
    size = 256
    lines = open(base[0].split("=", 1)[1]).read().split() if base[0].startswith("--flagfile=") else base
    for line in lines:
        if line.startswith("--batch_size="):
            size = int(line.split("=", 1)[1])
    return size


def calibrate(base, workdir):
    """Steps per second of pretraining after compilation: 2 epochs of 8 steps, the second one timed."""
    calibration = os.path.join(workdir, "calibration")
    run("pretrain.py", [*base, f"--workdir={calibration}", "--epochs=2", "--warmup_epochs=1", "--steps_per_epoch=8",
                        "--reconstruction_every=100", "--verbose=0"])
    with open(os.path.join(calibration, "log.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    return 8 / last["seconds"]


def schedule(total_steps, steps_per_epoch):
    """(epochs, steps_per_epoch, warmup_epochs) spending `total_steps`."""
    if total_steps >= 10 * steps_per_epoch:
        epochs = total_steps // steps_per_epoch
    else:  # Pseudo-epochs, so the warm-up and checkpoints still have a granularity.
        epochs, steps_per_epoch = 10, max(1, total_steps // 10)
    return epochs, steps_per_epoch, max(1, round(0.05 * epochs))


def main(argv):
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    workdir = FLAGS.workdir or f"/tmp/fashion_mnist_probe_{FLAGS.minutes:g}min_{backend}"
    os.makedirs(workdir, exist_ok=True)
    base = pretrain_flags()
    batch = batch_size(base)
    start = time.perf_counter()
    steps_per_second = calibrate(base, workdir)
    remaining = FLAGS.minutes * 60 - (time.perf_counter() - start)
    # 15% of the budget is kept for start-up, compilation and the final export.
    total_steps = max(10, int(0.85 * remaining * steps_per_second))
    epochs, steps_per_epoch, warmup = schedule(total_steps, TRAIN_IMAGES // batch)
    print(f"Calibration: {steps_per_second:.2f} steps/s; pretraining {epochs} epochs of {steps_per_epoch} steps")
    pretrain_dir = os.path.join(workdir, "pretrain")
    args = [*base, f"--workdir={pretrain_dir}", f"--epochs={epochs}", f"--warmup_epochs={warmup}",
            f"--steps_per_epoch={steps_per_epoch}", f"--reconstruction_every={epochs}", "--verbose=2"]
    run("pretrain.py", args)
    pretrain_minutes = (time.perf_counter() - start) / 60
    probe_dir = os.path.join(workdir, "linear_probe")
    probe_seconds = run("linear_probe.py", [f"--flagfile={FLAGS.probe_flagfile}", f"--encoder={pretrain_dir}",
                                            f"--workdir={probe_dir}", "--cache_features", "--compare_random_init",
                                            *FLAGS.probe_args])
    with open(os.path.join(probe_dir, "linear_probe.json")) as f:
        result = json.load(f)

    images = epochs * steps_per_epoch * batch
    header = ("| budget | backend | pretraining (wall) | images seen | probe (wall) | pretrained top-1 | random init top-1 |\n"
              "|---|---|---|---|---|---|---|")
    row = (f"| {FLAGS.minutes:g} min | {backend} | {pretrain_minutes:.1f} min, {epochs} x {steps_per_epoch} steps | "
           f"{images:,} ({images / TRAIN_IMAGES:.1f} epochs) | {probe_seconds / 60:.1f} min | "
           f"{100 * result['pretrained']['top1']:.1f}% | {100 * result['random_init']['top1']:.1f}% |")
    print(f"\n{header}\n{row}")
    with open(os.path.join(workdir, "probe_rows.md"), "a") as f:
        f.write(row + "\n")


if __name__ == "__main__":
    app.run(main)
