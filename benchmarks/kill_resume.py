"""Kill a real pretraining run at random moments, resume each with the same command, check every resume.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/kill_resume.py --kills=20

The run is apps/pretrain.py with apps/configs/smoke.flags (a 1-block ViT-Tiny MAE on Fashion-MNIST) for
`--epochs` epochs of `--steps` steps, checkpointing every `--checkpoint_every_steps` steps as well as at
epoch ends, so a good share of the moments fall inside checkpoint writes. One uninterrupted run is the
reference; it also measures the training span (from the checkpoint folder's creation, just before `fit`, to
the last checkpoint). Each trial starts the same run in a fresh workdir, waits for its checkpoint folder, sends
it SIGKILL (or, one trial in four, SIGTERM) at a random moment of 1.1 training spans, then reruns the same
command until it finishes. Checked after every resume: exit codes (0; 143 for a SIGTERM that arrived in
training, or -9), the final weights, optimizer moments and step bit-identical to the reference's, one
log.jsonl row per epoch, no `.tmp-*` file left. Where each kill landed (a training step, inside a
checkpoint write: a `.tmp-*` file present just after the kill, or the final exports after training) is
counted. Not a test: numbers go to
BENCHMARKS.md.
"""

import argparse
import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = os.path.join(ROOT, "apps", "pretrain.py")
SMOKE = os.path.join(ROOT, "apps", "configs", "smoke.flags")


def command(workdir, args):
    return [sys.executable, PRETRAIN, f"--flagfile={SMOKE}", f"--workdir={workdir}", "--verbose=0",
            f"--epochs={args.epochs}", f"--steps_per_epoch={args.steps}",
            f"--checkpoint_every_steps={args.checkpoint_every_steps}", "--reconstruction_every=1000",
            "--eval_every=0"]


def h5_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return arrays


def final_checkpoint(workdir, epochs):
    return os.path.join(workdir, "checkpoints", f"epoch_{epochs:04d}.weights.h5")


def wait_for_training(process, workdir):
    """Waits until the run's checkpoint folder exists (training is about to start); returns the time then."""
    while not os.path.isdir(os.path.join(workdir, "checkpoints")):
        if process.poll() is not None:
            raise SystemExit(f"the run ended (exit {process.returncode}) before training")
        time.sleep(0.02)
    return time.perf_counter()


def steps_done(workdir):
    """The newest log row's step (0 when none): how far the run got by epoch ends."""
    path = os.path.join(workdir, "log.jsonl")
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        rows = [line for line in f if line.strip()]
    return json.loads(rows[-1]).get("step", 0) if rows else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="Steps per epoch.")
    parser.add_argument("--checkpoint_every_steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill moments.")
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    rng = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="kill_resume_")

    reference = os.path.join(root, "reference")
    process = subprocess.Popen(command(reference, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    train_start = wait_for_training(process, reference)
    final_json = final_checkpoint(reference, args.epochs).replace(".weights.h5", ".json")
    while not os.path.isfile(final_json) and process.poll() is None:
        time.sleep(0.02)
    span = time.perf_counter() - train_start  # to the last checkpoint; the exports come after
    process.wait()
    if process.returncode:
        sys.exit(f"the reference run failed (exit {process.returncode})")
    want = h5_arrays(final_checkpoint(reference, args.epochs))
    print(f"backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}: reference training span {span:.1f} s "
          f"({args.epochs} epochs x {args.steps} steps, checkpoints every {args.checkpoint_every_steps} steps)")

    landed, failures, resume_seconds = {"training step": 0, "checkpoint write": 0, "exports": 0}, [], []
    for trial in range(args.kills):
        workdir = os.path.join(root, f"trial_{trial:02d}")
        signum = signal.SIGTERM if trial % 4 == 3 else signal.SIGKILL
        moment = rng.uniform(0.0, 1.1) * span  # a tenth of the moments in the exports after training
        process = subprocess.Popen(command(workdir, args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env=env, text=True)
        wait_for_training(process, workdir)
        time.sleep(moment)
        process.send_signal(signum)
        temporaries = glob.glob(os.path.join(workdir, "**", ".tmp-*"), recursive=True)
        trained = os.path.isfile(final_checkpoint(workdir, args.epochs))
        _, stderr = process.communicate()
        where = "checkpoint write" if temporaries else ("exports" if trained else "training step")
        landed[where] += 1
        codes = [process.returncode]
        resumed_at = steps_done(workdir)
        t0 = time.perf_counter()
        result = subprocess.run(command(workdir, args), capture_output=True, text=True, env=env)
        resume_seconds.append(time.perf_counter() - t0)
        codes.append(result.returncode)
        problems = []
        if result.returncode != 0:
            problems.append(f"resume exit {result.returncode}: {result.stderr[-500:]}")
        else:
            got = h5_arrays(final_checkpoint(workdir, args.epochs))
            if got.keys() != want.keys() or not all(np.array_equal(got[k], want[k]) for k in want):
                problems.append("final weights differ from the reference")
            with open(os.path.join(workdir, "log.jsonl")) as f:
                epochs = [json.loads(line)["epoch"] for line in f if line.strip()]
            if epochs != list(range(1, args.epochs + 1)):
                problems.append(f"log.jsonl epochs {epochs}")
            if glob.glob(os.path.join(workdir, "**", ".tmp-*"), recursive=True):
                problems.append("temporary files left")
        if signum == signal.SIGTERM and process.returncode not in (128 + signal.SIGTERM, -signal.SIGTERM, 0):
            problems.append(f"SIGTERM exit {process.returncode}: {stderr[-300:]}")
        if signum == signal.SIGTERM and process.returncode == 128 + signal.SIGTERM and len(
                [line for line in stderr.splitlines() if line.startswith("pretrain.py:")]) != 1:
            problems.append("SIGTERM: not one line")
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        print(f"trial {trial:2d}: {signal.Signals(signum).name} {moment:5.1f} s into training ({where}, log at step "
              f"{resumed_at}), exits {codes}: {status}", flush=True)
        if problems:
            failures.append(trial)
    print(f"\n{args.kills - len(failures)}/{args.kills} resumes exact; kills landed: "
          + ", ".join(f"{count} {name}" for name, count in landed.items())
          + f"; resume runs {np.median(resume_seconds):.1f} s median")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
