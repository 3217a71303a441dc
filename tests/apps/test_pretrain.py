"""The pretraining app end to end, in subprocesses on the current backend."""

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.run_app import APPS, FASHION_MNIST, ROOT, app_command, backend_independent, run, run_app, run_pretrain_main

needs_data = pytest.mark.skipif(not os.path.exists(FASHION_MNIST), reason="apt-get install dataset-fashion-mnist")


def pretrain_command(workdir, *args):
    return app_command("pretrain.py", f"--flagfile={os.path.join(APPS, 'configs', 'smoke.flags')}",
                       f"--workdir={workdir}", *args)


def read_log(workdir):
    with open(os.path.join(workdir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def tensorboard_images(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = []
    for root, _, files in os.walk(log_dir):
        if any(name.startswith("events.out") for name in files):
            accumulator = EventAccumulator(root, size_guidance={"tensors": 0})
            accumulator.Reload()
            for tag in accumulator.Tags()["tensors"]:
                if "reconstructions" in tag:
                    images += accumulator.Tensors(tag)
    return images


@pytest.mark.slow
@needs_data
def test_smoke_flagfile_runs_end_to_end(tmp_path):
    workdir = str(tmp_path / "run")
    result = run(pretrain_command(workdir))
    for name in ("model.keras", "encoder.keras", "encoder.weights.h5", "run.json", "flags.txt",
                 "checkpoints/epoch_0001.json", "reconstructions/epoch_0001.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    (record,) = read_log(workdir)
    assert record["epoch"] == 1 and record["step"] == 2 and 0 < record["loss"] < 10
    # Trained on the training split, validated (fixed masks) on the test split: both named with their counts.
    assert "Data:             train 60,000 images, test 10,000 images (the test split of fashion_mnist)" in result.stdout
    assert "Validation:       reconstruction loss on 16 test images every 1 epoch(s)" in result.stdout
    assert 0 < record["val_loss"] < 10 and (record["val_split"], record["val_images"]) == ("test", 16)
    assert "tensorboard --logdir" in result.stdout
    # The reconstruction grid is in the TensorBoard event file: 2 rows x 4 panels of 28x28, upscaled 3x.
    import tensorflow as tf

    (event,) = tensorboard_images(os.path.join(workdir, "tensorboard"))
    png = tf.make_ndarray(event.tensor_proto)[2]
    height, width = tf.io.decode_png(png).shape[:2]
    assert (height, width) == (3 * (2 * 30 - 2), 3 * (4 * 30 - 2))
    # flags.txt replays the run: the same command from it finds the finished run and does no training.
    replay = run_app("pretrain.py", f"--flagfile={os.path.join(workdir, 'flags.txt')}")
    assert "Resuming from epoch 1" in replay.stdout
    assert len(read_log(workdir)) == 1


@backend_independent  # kill-and-resume on every backend: test_reliability's SIGKILL case
@pytest.mark.slow
@needs_data
def test_killed_run_resumes_at_next_epoch_with_same_learning_rate(tmp_path):
    args = ("--epochs=3", "--warmup_epochs=1", "--steps_per_epoch=6", "--lr=1e-3", "--verbose=0")
    reference, workdir = str(tmp_path / "reference"), str(tmp_path / "killed")
    # The uninterrupted reference runs beside the run that will be killed (most of each process is imports).
    with ThreadPoolExecutor(1) as pool:
        reference_run = pool.submit(run, pretrain_command(reference, *args))
        process = subprocess.Popen(pretrain_command(workdir, *args), cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = os.path.join(workdir, "checkpoints", "epoch_0001.json")
        deadline = time.time() + 240
        while not os.path.exists(first) and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_after = len(read_log(workdir))
        assert 1 <= killed_after < 3, "the run must be killed after epoch 1 and before the end"
        reference_run.result()  # run() fails with the output's tails
    expected = {r["epoch"]: r for r in read_log(reference)}

    result = run(pretrain_command(workdir, *args))
    assert f"Resuming from epoch {killed_after}" in result.stdout
    resumed = [r for r in read_log(workdir)][killed_after:]
    assert [r["epoch"] for r in resumed] == list(range(killed_after + 1, 4))
    for record in resumed:
        assert record["step"] == expected[record["epoch"]]["step"]
        assert record["learning_rate"] == pytest.approx(expected[record["epoch"]]["learning_rate"], rel=1e-6)


@pytest.mark.slow
@backend_independent
def test_flag_file_lines_that_are_not_flags_and_mask_ratio_zero(tmp_path):
    flagfile = tmp_path / "my.flags"
    flagfile.write_text("# my run\n--epochs=2\nbatch_size=4\n")
    results = run_pretrain_main([{"argv": pretrain_command(str(tmp_path / "run"), f"--flagfile={flagfile}")[2:]},
                                 {"argv": pretrain_command("/proc/keras_mae_run", "--mask_ratio=0")[2:]}])
    assert results[0]["code"] == 2 and "Traceback" not in results[0]["stderr"]
    assert f"{flagfile}:3: 'batch_size=4' is not a flag; write it as --name=value" in results[0]["stderr"]
    assert "--mask_ratio=0 masks no patch" in results[1]["stderr"] and "is not writable" in results[1]["stderr"]


@needs_data
@pytest.mark.slow
@backend_independent
def test_one_run_per_workdir(tmp_path):
    """A second run on a workdir in use stops in one line naming the first, which goes on unharmed."""
    workdir = str(tmp_path / "run")
    first = subprocess.Popen(pretrain_command(workdir, "--steps_per_epoch=100000", "--verbose=0"), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # one epoch of 7,500 steps
    try:
        lock = os.path.join(workdir, ".lock")
        deadline = time.time() + 120
        while not (os.path.exists(lock) and f"pid {first.pid} " in open(lock).read()) and time.time() < deadline:
            time.sleep(0.05)
        second = run(pretrain_command(workdir), check=False)
        assert first.poll() is None, "the first run must still be training"
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is in use by another run (pid {first.pid} on " in second.stderr
        assert "--workdir" in second.stderr.strip().splitlines()[-1]
    finally:
        first.send_signal(signal.SIGKILL)  # the hard way: no clean-up runs, the kernel frees the lock
        first.wait()
    assert "Model:" in run(pretrain_command(workdir)).stdout  # the workdir is free again


@needs_data
@pytest.mark.slow
@backend_independent
def test_resume_refuses_flags_that_would_mix_two_runs(tmp_path):
    workdir = str(tmp_path / "run")
    run(pretrain_command(workdir))
    recorded = json.loads(open(os.path.join(workdir, "run.json")).read())
    # (flags, what the refusal says). Refusals come before any training, so they run in one process.
    cases = [
        (("--batch_size=4",), "trained with other flags (--batch_size=8 -> --batch_size=4); resume with its flags "
                              f"(--flagfile={os.path.join(workdir, 'flags.txt')}), pass a new --workdir, or "
                              "--allow_flag_change=batch_size to change them"),
        (("--epochs=2", "--nonorm_pix_loss"), "(--epochs=1 -> --epochs=2; --norm_pix_loss -> --nonorm_pix_loss)"),
        (("--hidden_dim=96", "--allow_flag_change=hidden_dim"), "holds checkpoints of another model (no --hidden_dim "
                                                                "-> --hidden_dim=96); pass a new --workdir"),
    ]
    results = run_pretrain_main([{"argv": pretrain_command(workdir, *args)[2:]} for args, _ in cases])
    for (args, message), result in zip(cases, results, strict=True):
        assert result["code"] == 2 and message in result["stderr"], (args, result)
        assert "Traceback" not in result["stderr"], (args, result["stderr"])
    # Allowed changes resume, and run.json keeps the statistics the checkpoints were trained with.
    images = np.random.default_rng(0).integers(0, 80, (64, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "dark.npz", x=images, y=np.arange(64) % 4)
    result = run(pretrain_command(workdir, "--epochs=2", f"--dataset={tmp_path / 'dark.npz'}",
                                  "--allow_flag_change=epochs,dataset"))
    assert "Flags changed on resume (--allow_flag_change): --dataset=fashion_mnist -> " in result.stdout
    assert "Resuming from epoch 1" in result.stdout
    after = json.loads(open(os.path.join(workdir, "run.json")).read())
    assert (after["mean"], after["std"]) == (recorded["mean"], recorded["std"])
