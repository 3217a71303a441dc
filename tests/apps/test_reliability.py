"""Reliability: crashes, bad data, bad input, numerical faults and untrusted files.

The app tests run `apps/pretrain.py` in subprocesses on the current backend with the smoke flag
file (a 1-block model), on a folder of 22 image files made in tmp_path, 4 of them unreadable: one
uninterrupted 3-epoch run on it is the bad-data test and the reference the crash and NaN tests
compare with. JAX subprocesses share the session's compilation cache (conftest.py), so only the
first compiles.
"""

import glob
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

import keras_mae
from keras_mae import callbacks, data, optimizers
from tests.run_app import APPS, ROOT, backend_independent, on_small_disk, run, run_pretrain_main, small_disk

SMOKE = os.path.join(APPS, "configs", "smoke.flags")
# 3 epochs of 4 steps of 4 of the folder's 18 readable images, RGB; no reconstruction summaries (their
# eager forward pass dominates a JAX smoke run).
RUN_ARGS = ("--epochs=3", "--steps_per_epoch=4", "--batch_size=4", "--num_channels=3", "--lr=1e-3",
            "--clip_grad=0.5", "--verbose=0", "--reconstruction_every=100")
KILL_AT_STEP = 6  # Mid-epoch 2, after the epoch-1 checkpoint.
# The quickest way to run one train step in process: compiled on JAX (eager JAX compiles every op), eager elsewhere.
ONE_STEP = {"jit_compile": True} if keras.backend.backend() == "jax" else {"run_eagerly": True}

# Runs pretrain.py, sending itself a signal (argv[1]) right after optimizer step argv[2] (the log's callback runs
# before the checkpoint's): a crash (SIGKILL) or a preemption (SIGTERM, SIGINT) at a known point; or, for
# FILL_DISK, filling the workdir's disk but for 100 kB.
KILLER = f"""
import os, runpy, shutil, signal, sys
sys.path.insert(0, {APPS!r})
from keras_mae.callbacks import TrainingLog
fault, at_step = sys.argv.pop(1), int(sys.argv.pop(1))
def fill_disk(workdir):
    with open(os.path.join(workdir, "filler"), "wb") as f:
        f.write(bytes(shutil.disk_usage(workdir).free - 100_000))
after_batch = TrainingLog.on_train_batch_end
def on_train_batch_end(self, batch, logs=None):
    after_batch(self, batch, logs)
    if int(self.model.optimizer.iterations) == at_step:
        if fault == "FILL_DISK":
            fill_disk(os.path.dirname(self.path))
        else:
            os.kill(os.getpid(), getattr(signal, fault))
TrainingLog.on_train_batch_end = on_train_batch_end
sys.argv = [{os.path.join(APPS, "pretrain.py")!r}, *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# === Helpers ===


def pretrain(workdir, *args, python=()):
    command = [sys.executable, *python, *(() if python else (os.path.join(APPS, "pretrain.py"),)),
               f"--flagfile={SMOKE}", f"--workdir={workdir}", *args]
    return run(command, check=False, timeout=600)


def check(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def read_log(workdir):
    with open(os.path.join(workdir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def h5_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return arrays


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tiny_model(tiny_config):
    model = keras_mae.MaskedAutoencoder(**tiny_config, seed=1)
    model.compile(optimizer=optimizers.make_pretrain_optimizer(model, 1e-3))
    return model


def tiny_images(tiny_config, n=4):
    h, w = tiny_config["image_size"]
    return np.random.default_rng(0).normal(size=(n, h, w, tiny_config["num_channels"])).astype("float32")


def restores_masking_noise(tiny_config, directory):
    """Whether a checkpoint restores the masking SeedGenerator: the next masks equal an uninterrupted run's."""
    model, images = tiny_model(tiny_config), tiny_images(tiny_config, n=8)
    model.optimizer.build(model.trainable_variables)
    checkpoint = callbacks.EpochCheckpoint(directory)
    checkpoint.set_model(model)
    checkpoint.save(1)
    uninterrupted = keras.ops.convert_to_numpy(model(images)["mask"])
    callbacks.restore_latest(model, directory)
    return np.array_equal(keras.ops.convert_to_numpy(model(images)["mask"]), uninterrupted)




@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("data") / "images")
    return folder, make_bad_image_folder(folder)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, bad_folder):
    """An uninterrupted 3-epoch run on the bad folder: (workdir, its stderr); read-only for the tests."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    result = check(pretrain(workdir, f"--dataset={bad_folder[0]}", *RUN_ARGS))
    return workdir, result.stderr


# === 1. Crash and resume ===


def test_epoch_e_batches_depend_only_on_seed_and_e(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (21, 20, 20, 3), np.uint8)
    make = lambda **kw: iter(data.make_pretrain_dataset(images, 12, 4, seed=5, steps_per_epoch=3, **kw))
    fresh = make()
    epochs = [[np.asarray(next(fresh)) for _ in range(3)] for _ in range(4)]
    resumed = make(initial_epoch=2)
    for epoch in (2, 3):
        for step in range(3):
            np.testing.assert_array_equal(np.asarray(next(resumed)), epochs[epoch][step])
    assert not np.allclose(epochs[1][0], epochs[2][0])
    # 5 epochs of 3 x 4 images from 21 images: each epoch is full, topped up from a reshuffle.
    long = iter(data.make_pretrain_dataset(images, 12, 4, seed=5, steps_per_epoch=8))
    assert all(next(long).shape == (4, 12, 12, 3) for _ in range(5 * 8))


@pytest.mark.slow
@pytest.mark.faults
def test_sigkill_mid_epoch_then_same_command_resumes_exactly(tmp_path, reference_run, bad_folder, tiny_config):
    reference_run, _ = reference_run
    args = (f"--dataset={bad_folder[0]}", *RUN_ARGS)
    workdir = str(tmp_path / "killed")
    killed = pretrain(workdir, *args, python=("-c", KILLER, "SIGKILL", str(KILL_AT_STEP)))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [epoch for epoch, _ in callbacks.complete_checkpoints(os.path.join(workdir, "checkpoints"))] == [1]

    result = check(pretrain(workdir, *args))  # The same command again.
    assert "Resuming from epoch 1 (step 4)" in result.stdout
    expected, resumed = read_log(reference_run), read_log(workdir)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for got, want in zip(resumed, expected):
        assert got["step"] == want["step"] and got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-6)
    assert resumed[0]["loss"] == expected[0]["loss"]  # Epoch 1 ran before the kill.
    for got, want in zip(resumed[1:], expected[1:]):  # No jump back to the untrained loss (1.6 here).
        assert got["loss"] == pytest.approx(want["loss"], rel=0.1)
    assert_same_final_checkpoint(workdir, reference_run)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in expected]


def assert_same_final_checkpoint(workdir, reference_run):
    """The final weights, optimizer moments and step are bit-identical to the uninterrupted run's."""
    final = "checkpoints/epoch_0003.weights.h5"
    got, want = h5_arrays(os.path.join(workdir, final)), h5_arrays(os.path.join(reference_run, final))
    assert got.keys() == want.keys()
    exact = all(np.array_equal(got[name], want[name]) for name in want)
    assert exact, {name: float(np.max(np.abs(got[name] - want[name]))) for name in want if got[name].size}


@pytest.mark.slow
@pytest.mark.faults
# SIGINT takes the same path as SIGTERM once caught: checked on one backend.
@pytest.mark.parametrize("signal_name", ["SIGTERM", pytest.param("SIGINT", marks=backend_independent)])
def test_preemption_checkpoints_mid_epoch_and_the_same_command_resumes_exactly(tmp_path, reference_run, bad_folder,
                                                                              signal_name):
    if signal_name == "SIGINT" and keras.backend.backend() != "torch":
        pytest.skip("the signal's handling is the backend's; SIGINT (same handler as SIGTERM) on torch only")
    reference_run, _ = reference_run
    args = (f"--dataset={bad_folder[0]}", *RUN_ARGS)
    workdir = str(tmp_path / "preempted")
    stopped = pretrain(workdir, *args, python=("-c", KILLER, signal_name, str(KILL_AT_STEP)))
    signum = getattr(signal, signal_name)
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    message = [line for line in stopped.stderr.splitlines() if line.startswith("pretrain.py:")]
    assert message == [f"pretrain.py: stopped by {signal_name} after epoch 1 and 2 steps of epoch 2; checkpoint "
                       f"written: {workdir}/checkpoints/epoch_0001_step_000002.weights.h5. Rerun the same command "
                       "to resume."], stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    records = callbacks.checkpoint_records(os.path.join(workdir, "checkpoints"))
    assert [(r["epoch"], r["step_in_epoch"], r["step"]) for r in records] == [(1, 0, 4), (1, 2, 6)]
    assert [r["epoch"] for r in read_log(workdir)] == [1]  # no row for the unfinished epoch

    result = check(pretrain(workdir, *args))  # The same command again.
    assert "Resuming from epoch 1, 2 steps into epoch 2 (step 6)" in result.stdout
    resumed, expected = read_log(workdir), read_log(reference_run)
    assert [(r["epoch"], r["step"]) for r in resumed] == [(r["epoch"], r["step"]) for r in expected]
    assert resumed[1]["resumed_at_step_in_epoch"] == 2 and "resumed_at_step_in_epoch" not in resumed[2]
    assert_same_final_checkpoint(workdir, reference_run)
    # The mid-epoch checkpoint made way for the epoch checkpoints after it.
    assert [(r["epoch"], r["step_in_epoch"]) for r in callbacks.checkpoint_records(
        os.path.join(workdir, "checkpoints"))] == [(1, 0), (2, 0), (3, 0)]


@backend_independent  # the step checkpoint's save is test_preemption's on every backend
@pytest.mark.slow
@pytest.mark.faults
def test_checkpoint_every_steps_resumes_a_crash_from_inside_the_epoch(tmp_path, reference_run, bad_folder):
    reference_run, _ = reference_run
    args = (f"--dataset={bad_folder[0]}", *RUN_ARGS, "--checkpoint_every_steps=3")
    workdir = str(tmp_path / "killed")
    killed = pretrain(workdir, *args, python=("-c", KILLER, "SIGKILL", "8"))  # the end of epoch 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    records = callbacks.checkpoint_records(os.path.join(workdir, "checkpoints"))
    # Epoch 1's and step 6's (step 3's was deleted once epoch 1's was complete); none at step 8, killed first.
    assert [(r["epoch"], r["step_in_epoch"]) for r in records] == [(1, 0), (1, 2)]
    result = check(pretrain(workdir, *args))
    assert "Resuming from epoch 1, 2 steps into epoch 2 (step 6)" in result.stdout
    assert_same_final_checkpoint(workdir, reference_run)


@small_disk
@backend_independent  # the writes are tests/utils/test_disk_space.py's on every backend
@pytest.mark.slow
@pytest.mark.faults
def test_a_disk_that_fills_during_the_run_stops_in_one_line_and_the_run_resumes(tmp_path, reference_run, bad_folder):
    reference_run, _ = reference_run
    args = (f"--dataset={bad_folder[0]}", *RUN_ARGS)
    disk, copy = str(tmp_path / "disk"), str(tmp_path / "copy")
    os.makedirs(disk), os.makedirs(copy)
    workdir = os.path.join(disk, "run")
    command = [sys.executable, "-c", KILLER, "FILL_DISK", str(KILL_AT_STEP), f"--flagfile={SMOKE}",
               f"--workdir={workdir}", *args]
    full = run(on_small_disk(command, disk, size_mb=64, copy_to=copy), check=False, timeout=600)
    assert full.returncode == 1, full.stderr[-3000:]  # not 139: no crash
    errors = [line for line in full.stderr.splitlines() if line.startswith("pretrain.py:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"pretrain.py: error: No space left on the device for {workdir}/checkpoints/epoch_0002.weights.h5: "
        "it needs about "), full.stderr[-3000:]
    assert "Traceback" not in full.stderr and "Exception ignored" not in full.stderr
    copied = os.path.join(copy, "run")
    assert not glob.glob(os.path.join(copied, "**", ".tmp-*"), recursive=True)
    assert [epoch for epoch, _ in callbacks.complete_checkpoints(os.path.join(copied, "checkpoints"))] == [1]
    # With space again (here: the workdir copied to a roomy disk), the same command resumes from epoch 1 and
    # ends where an uninterrupted run does.
    os.remove(os.path.join(copied, "filler"))
    check(pretrain(copied, *args))
    assert_same_final_checkpoint(copied, reference_run)


def test_checkpoint_restores_masking_noise(tiny_config, tmp_path):
    assert restores_masking_noise(tiny_config, str(tmp_path))


@pytest.mark.faults
def test_crash_while_writing_a_checkpoint_leaves_the_previous_one_usable(tiny_config, tmp_path, monkeypatch):
    directory = str(tmp_path / "checkpoints")
    model = tiny_model(tiny_config)
    model.optimizer.build(model.trainable_variables)
    checkpoint = callbacks.EpochCheckpoint(directory, keep=2)
    checkpoint.set_model(model)
    checkpoint.save(1)
    saved = [keras.ops.convert_to_numpy(v) for v in model.weights]
    for variable in model.trainable_variables:  # Training goes on.
        variable.assign(variable + 1.0)

    save_weights = model.save_weights

    def crash_midway(path, **kwargs):
        save_weights(path, **kwargs)  # The file is written ...
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)  # ... half of it reaches the disk ...
        raise OSError("simulated crash while writing")  # ... and the process dies.

    monkeypatch.setattr(model, "save_weights", crash_midway)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoint.save(2)
    assert sorted(os.listdir(directory)) == ["epoch_0001.json", "epoch_0001.weights.h5"]  # No partial file left.
    # A crash after the weights but before the json that marks them complete: still epoch 1.
    save_weights(os.path.join(directory, "epoch_0002.weights.h5"))
    # A SIGKILL mid-write leaves the temporary file behind (no `finally` runs); the user's own file stays.
    save_weights(os.path.join(directory, ".tmp-k1ll3d.weights.h5"))
    open(os.path.join(directory, "notes.txt"), "w").close()

    fresh = tiny_model(tiny_config)
    assert callbacks.restore_latest(fresh, directory) == 1
    assert sorted(os.listdir(directory)) == [
        "epoch_0001.json", "epoch_0001.weights.h5", "epoch_0002.weights.h5", "notes.txt"]
    for got, want in zip(fresh.weights, saved):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)


def test_keep_checkpoints_keeps_the_newest(tiny_config, tmp_path):
    directory = str(tmp_path / "checkpoints")
    checkpoint = callbacks.EpochCheckpoint(directory, keep=2)
    checkpoint.set_model(tiny_model(tiny_config))
    for epoch in range(1, 6):
        checkpoint.save(epoch)
    assert sorted(os.listdir(directory)) == [
        "epoch_0004.json", "epoch_0004.weights.h5", "epoch_0005.json", "epoch_0005.weights.h5"]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        callbacks.EpochCheckpoint(directory, keep=0)


# === 2. Bad data ===


def make_bad_image_folder(root):
    """12 good JPEGs; 4 unreadable files; CMYK, 16-bit, palette, RGBA and 1x1 / 2x3 images."""
    rng = np.random.default_rng(0)
    rgb = lambda h, w: Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
    os.makedirs(root)
    for i in range(12):
        rgb(40, 36).save(os.path.join(root, f"good_{i:02d}.jpg"), quality=90)
    jpeg = io.BytesIO()
    rgb(64, 64).save(jpeg, "JPEG")
    jpeg = jpeg.getvalue()
    unreadable = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "corrupt.jpg": jpeg[:200] + rng.integers(0, 256, 3000, np.uint8).tobytes(),
        "empty.png": b"",
        "notes.jpg": b"not an image\n",
    }
    for name, content in unreadable.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(content)
    with open(os.path.join(root, "README.txt"), "w") as f:
        f.write("Not an image extension: not even listed.\n")
    rgb(30, 30).convert("CMYK").save(os.path.join(root, "cmyk.jpg"))
    Image.fromarray(rng.integers(0, 65536, (30, 30), np.uint16)).save(os.path.join(root, "deep16.png"))
    palette = rgb(30, 30).convert("P")
    palette.info["transparency"] = 0
    palette.save(os.path.join(root, "palette.png"))
    Image.fromarray(rng.integers(0, 256, (30, 30, 4), np.uint8), "RGBA").save(os.path.join(root, "rgba.png"))
    rgb(1, 1).save(os.path.join(root, "tiny_1x1.png"))
    rgb(2, 3).save(os.path.join(root, "tiny_2x3.png"))
    return sorted(unreadable)


@backend_independent  # the folder reader is tf.data's on every backend
@pytest.mark.slow
def test_bad_image_folder_trains_and_names_the_skipped_files(reference_run, bad_folder):
    workdir, stderr = reference_run
    folder, unreadable = bad_folder
    (summary,) = [line for line in stderr.splitlines() if "unreadable" in line]
    assert f"Skipped 4 unreadable files of 22 under {folder}: " in summary
    assert all(name in summary for name in unreadable)
    assert [(r["epoch"], r["step"]) for r in read_log(workdir)] == [(1, 4), (2, 8), (3, 12)]
    assert all(np.isfinite(r["loss"]) for r in read_log(workdir))
    with zipfile.ZipFile(os.path.join(workdir, "model.keras")) as archive:
        optimizer = json.loads(archive.read("config.json"))["compile_config"]["optimizer"]["config"]
    assert optimizer["global_clipnorm"] == 0.5  # --clip_grad reached the optimizer.


# === 3. Bad input ===


@backend_independent  # flags and files
@pytest.mark.slow
def test_bad_input_is_one_sentence_before_training(tmp_path):
    empty_folder, a_file = tmp_path / "empty", tmp_path / "a_file"
    empty_folder.mkdir()
    a_file.write_text("a regular file\n")
    unreadable_folder = tmp_path / "unreadable"
    unreadable_folder.mkdir()
    (unreadable_folder / "a.jpg").write_bytes(b"")
    (unreadable_folder / "b.png").write_text("text")
    empty_npz = str(tmp_path / "empty.npz")
    np.savez(empty_npz)
    # (flags, free disk bytes or None, what the one line must say).
    cases = [
        (["--preset=mae_vit_gigantic"], None, "Unknown preset 'mae_vit_gigantic'"),
        (["--mask_ratio=1.2"], None, "--mask_ratio must be in [0, 1). Received: --mask_ratio=1.2"),
        (["--base_lr=-1"], None, "--base_lr must be in (0, inf). Received: --base_lr=-1.0"),
        (["--drop_path_rate=1.5"], None, "--drop_path_rate must be in [0, 1). Received: --drop_path_rate=1.5"),
        (["--num_reconstructions=0"], None, "--num_reconstructions must be in [1, inf)"),
        (["--image_size=30"], None, "not divisible by patch_size=4"),
        (["--dataset=/no/such/folder"], None, "/no/such/folder"),
        (["--batch_sise=3"], None, "Unknown command line flag 'batch_sise'"),
        (["--dataset="], None, "Unknown dataset ''"),
        ([f"--dataset={empty_folder}"], None, f"No images found under '{empty_folder}'"),
        ([f"--dataset={unreadable_folder}"], None, f"None of the 2 image files under '{unreadable_folder}'"),
        ([f"--dataset={empty_npz}"], None, f"No image array for split 'train' in '{empty_npz}'"),
        (["--mask_ratio=-0.1"], None, "mask_ratio=-0.1"),
        (["--mask_ratio=1"], None, "mask_ratio=1.0"),
        (["--epochs=ten"], None, "--epochs=ten"),
        (["--norm_pix_los"], None, "Unknown command line flag 'norm_pix_los'"),
        (["--keep_checkpoints=0"], None, "--keep_checkpoints must be at least 1"),
        ([f"--workdir={a_file}/run"], None, f"workdir '{a_file}/run' is not writable"),
        (["--workdir=/proc/keras_mae_run"], None, "workdir '/proc/keras_mae_run' is not writable"),
        ([], 2**20, "Only 1 MiB free under workdir"),
    ]
    runs = [{"argv": [f"--flagfile={SMOKE}", f"--workdir={tmp_path / f'run_{i}'}", *argv], "free_bytes": free}
            for i, (argv, free, _) in enumerate(cases)]
    results = run_pretrain_main(runs)
    for i, ((argv, _, message), result) in enumerate(zip(cases, results, strict=True)):
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        assert result["code"] not in (0, None), (argv, result)
        assert "Traceback" not in result["stderr"], (argv, result["stderr"])
        assert message in lines[0] and not lines[0].startswith("-c"), (argv, lines)
        assert len(lines) <= 2, (argv, lines)  # absl adds a "--helpshort" hint to flag errors.
        # Nothing was trained: no checkpoint, no log.
        workdir = tmp_path / f"run_{i}"
        assert not (workdir / "checkpoints").exists() and not (workdir / "log.jsonl").exists(), argv


def test_check_workdir_names_the_space_needed_and_the_fix(tmp_path, monkeypatch):
    sys.path.insert(0, APPS)
    try:
        import common
    finally:
        sys.path.remove(APPS)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    common.check_workdir(str(tmp_path / "fits"), needed_bytes=9 * 2**20)
    with pytest.raises(common.UserError) as error:
        common.check_workdir(str(tmp_path / "full"), needed_bytes=300 * 2**20)
    assert str(error.value) == (f"Only 10 MiB free under workdir '{tmp_path / 'full'}', a checkpoint needs about "
                                "300 MiB; free some disk or pass another --workdir.")
    (tmp_path / "file").write_text("")
    with pytest.raises(common.UserError, match="is not writable .*; pass a --workdir you can write to"):
        common.check_workdir(str(tmp_path / "file" / "run"))


# === 4. Numerical faults ===


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, reference_run,
                                                                                   bad_folder):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run[0], workdir)
    last_good = os.path.join(workdir, "checkpoints", "epoch_0003.weights.h5")
    digest = sha256(last_good)
    # Epochs 1-3 trained well; epoch 4 at an absurd learning rate blows up.
    result = pretrain(workdir, f"--dataset={bad_folder[0]}", *RUN_ARGS, "--epochs=4", "--lr=1e30",
                      "--allow_flag_change=epochs,lr")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    match = re.search(r"Loss became (nan|inf|-inf) at step (\d+); training stopped, the last good checkpoint is kept",
                      result.stderr)
    assert match, result.stderr[-3000:]
    assert 13 <= int(match.group(2)) <= 16  # A step of epoch 4.
    assert "--clip_grad" in result.stderr
    checkpoints = callbacks.complete_checkpoints(os.path.join(workdir, "checkpoints"))
    assert [epoch for epoch, _ in checkpoints] == [1, 2, 3] and sha256(last_good) == digest
    assert not glob.glob(os.path.join(workdir, "checkpoints", "*0004*"))


def test_clip_grad_bounds_the_step(tiny_config):
    # Adam's first step is lr * sqrt(1 - beta_2) * g / (sqrt(1 - beta_2) |g| + eps): with the gradient clipped
    # to global norm c << eps, the whole update has norm <= lr * sqrt(1 - beta_2) * c / eps.
    lr, clip, beta_2, eps = 1.0, 1e-9, 0.95, 1e-8
    images = tiny_images(tiny_config)

    def step_norm(global_clipnorm):
        model = keras_mae.MaskedAutoencoder(**tiny_config, seed=1)
        model.compile(optimizer=optimizers.make_pretrain_optimizer(model, lr, weight_decay=0.0, beta_2=beta_2,
                                                                   global_clipnorm=global_clipnorm), **ONE_STEP)
        before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        model.train_on_batch(images)
        after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        return np.sqrt(sum(np.sum((a.astype(np.float64) - b) ** 2) for a, b in zip(after, before)))

    bound = lr * np.sqrt(1 - beta_2) * clip / eps
    clipped = step_norm(clip)
    assert 0.5 * bound < clipped <= bound * 1.001
    assert step_norm(None) > 100 * bound


# === 5. Untrusted files ===


def test_keras_file_with_code_is_refused_and_nothing_runs(tmp_path):
    marker = str(tmp_path / "pwned")
    payload = keras.layers.Lambda(lambda x: (open(marker, "w").write("pwned"), x)[1])
    inputs = keras.Input((3,))
    keras.Model(inputs, payload(inputs)).save(str(tmp_path / "evil.keras"))
    os.remove(marker)  # Building the model ran the lambda: it is live code.

    from keras_mae import checkpoints

    for load in (keras.saving.load_model, checkpoints.load_model):
        with pytest.raises(ValueError, match="safe_mode=False"):
            load(str(tmp_path / "evil.keras"))
        assert not os.path.exists(marker)
    keras.saving.load_model(str(tmp_path / "evil.keras"), safe_mode=False)  # What the refusal prevented.
    assert os.path.exists(marker)


class _WritesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # Unpickling creates the file.


def test_pickled_objects_in_npz_data_are_refused(tmp_path):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "evil.npz")
    images = np.empty(2, dtype=object)
    images[:] = [_WritesAFile(marker), np.zeros((8, 8), np.uint8)]
    np.savez(path, x=images)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        data.load_source(path)
    assert not os.path.exists(marker)
    with np.load(path, allow_pickle=True) as archive:
        archive["x"]  # What the refusal prevented.
    assert os.path.exists(marker)


def test_no_code_path_turns_safe_loading_off():
    unsafe = re.compile(r"safe_mode\s*=\s*False|enable_unsafe_deserialization|allow_pickle\s*=\s*True|"
                        r"weights_only\s*=\s*False|pickle\.loads?\(")
    offenders = []
    for folder in ("keras_mae", "apps", "benchmarks"):
        for path in glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True):
            with open(path) as f:
                offenders += [f"{path}:{i}" for i, line in enumerate(f, 1) if unsafe.search(line)]
    assert not offenders
