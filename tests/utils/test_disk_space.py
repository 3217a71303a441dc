"""A full disk: one line naming the file, the previous checkpoint intact, no temporary file, no crash.

The writes run in a subprocess on a real, small tmpfs (its own mount namespace), since HDF5's behaviour on a
full disk (a crash at exit) is what the checks guard against.
"""

import json
import os
import sys

import pytest

from keras_mae.utils import disk_space
from tests.run_app import ROOT, on_small_disk, run, small_disk

WRITER = """
import json, os, shutil, sys
import numpy as np
import keras_mae
from keras_mae import callbacks, optimizers
from keras_mae.utils.atomic import write_json_atomic
from keras_mae.utils.image_grid import write_png

disk = sys.argv[1]
config = dict(image_size=(16, 16), patch_size=8, num_channels=3, hidden_dim=32, num_layers=1, num_heads=2,
              mlp_dim=64, decoder_hidden_dim=32, decoder_num_layers=1, decoder_num_heads=2, decoder_mlp_dim=64)
def compiled():
    model = keras_mae.MaskedAutoencoder(**config, seed=1)
    model.compile(optimizer=optimizers.make_pretrain_optimizer(model, 1e-3))
    model.optimizer.build(model.trainable_variables)
    return model
model, directory = compiled(), os.path.join(disk, "checkpoints")
checkpoint = callbacks.EpochCheckpoint(directory)
checkpoint.set_model(model)
checkpoint.save(1)
saved = [np.asarray(v) for v in model.weights]
def fill(leave):
    with open(os.path.join(disk, f"filler_{leave}"), "wb") as f:
        f.write(bytes(max(shutil.disk_usage(disk).free - leave, 0)))
def attempt(write):
    try:
        write()
        return None
    except Exception as error:
        return [type(error).__name__, str(error)]
results = {}
fill(os.path.getsize(os.path.join(directory, "epoch_0001.weights.h5")) // 2)  # half a checkpoint free
results["checkpoint"] = attempt(lambda: checkpoint.save(2))
fill(0)
log = callbacks.TrainingLog(4, os.path.join(disk, "log.jsonl"))
log.set_model(model)
log.on_epoch_begin(0)
results["json"] = attempt(lambda: write_json_atomic(os.path.join(disk, "run.json"), {"x": list(range(5000))}))
results["png"] = attempt(lambda: write_png(os.path.join(disk, "figure.png"), np.full((200, 200, 3), 7, np.uint8)))
results["log"] = attempt(lambda: log.on_epoch_end(0, {"loss": 1.0}))
results["files"] = sorted(os.listdir(directory)) + sorted(f for f in os.listdir(disk) if f.startswith(".tmp-"))
fresh = compiled()
results["restored_epoch"] = callbacks.restore_latest(fresh, directory)
results["restored_equal"] = all(np.array_equal(np.asarray(a), b) for a, b in zip(fresh.weights, saved))
print("RESULTS " + json.dumps(results))
"""


@small_disk
@pytest.mark.faults
def test_a_full_disk_is_one_line_naming_the_file_and_the_last_checkpoint_survives(tmp_path):
    disk = str(tmp_path / "disk")
    os.makedirs(disk)
    result = run(on_small_disk([sys.executable, "-c", WRITER, disk], disk, size_mb=4), check=False,
                 env={"PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]  # no crash at exit (HDF5 on a full disk: exit 139)
    results = json.loads(result.stdout.split("RESULTS ", 1)[1])
    kind, message = results["checkpoint"]
    assert kind == "DiskFullError"
    assert message.startswith(f"No space left on the device for {disk}/checkpoints/epoch_0002.weights.h5: "
                              "it needs about 0.")
    assert "\n" not in message and "free" in message
    for write, name in (("json", "run.json"), ("png", "figure.png"), ("log", "log.jsonl")):
        kind, message = results[write]
        assert kind == "DiskFullError" and message.startswith(f"No space left on the device for {disk}/{name}: ")
    # Only the first checkpoint, complete, and no temporary file; it restores exactly.
    assert results["files"] == ["epoch_0001.json", "epoch_0001.weights.h5"]
    assert results["restored_epoch"] == 1 and results["restored_equal"]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_free_space_is_checked_with_a_margin(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=disk_space.MARGIN + 1000))
    disk_space.require_free_space(str(tmp_path / "a.h5"), 1000)
    with pytest.raises(disk_space.DiskFullError, match=r"a\.h5: it needs about 0\.0 MiB \(and 1\.0 MiB to spare\)"):
        disk_space.require_free_space(str(tmp_path / "a.h5"), 1001)
    assert not disk_space.is_out_of_space(OSError(13, "Permission denied"))
    assert disk_space.is_out_of_space(OSError(None, "Can't write data (errno = 28, No space left on device)"))
