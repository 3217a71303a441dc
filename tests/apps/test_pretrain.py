"""The pretraining app end to end, in subprocesses on the current backend."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.run_app import APPS, FASHION_MNIST, ROOT, app_command, run, run_app

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


@pytest.mark.slow
@needs_data
def test_killed_run_resumes_at_next_epoch_with_same_learning_rate(tmp_path):
    args = ("--epochs=3", "--warmup_epochs=1", "--steps_per_epoch=6", "--lr=1e-3", "--verbose=0")
    reference = str(tmp_path / "reference")
    run(pretrain_command(reference, *args))
    expected = {r["epoch"]: r for r in read_log(reference)}

    workdir = str(tmp_path / "killed")
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

    result = run(pretrain_command(workdir, *args))
    assert f"Resuming from epoch {killed_after}" in result.stdout
    resumed = [r for r in read_log(workdir)][killed_after:]
    assert [r["epoch"] for r in resumed] == list(range(killed_after + 1, 4))
    for record in resumed:
        assert record["step"] == expected[record["epoch"]]["step"]
        assert record["learning_rate"] == pytest.approx(expected[record["epoch"]]["learning_rate"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("flag, message", [
    ("--preset=mae_vit_gigantic", "Unknown preset 'mae_vit_gigantic'"),
    ("--mask_ratio=1.2", "mask_ratio=1.2"),
    ("--image_size=30", "not divisible by patch_size=4"),
    ("--dataset=/no/such/folder", "/no/such/folder"),
    ("--batch_sise=3", "Unknown command line flag 'batch_sise'"),
])
def test_bad_input_is_one_clear_error(tmp_path, flag, message):
    result = run(pretrain_command(str(tmp_path / "run"), flag), check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
