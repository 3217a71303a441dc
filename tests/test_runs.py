"""keras_mae.runs: the pretraining workdir layout, written once and read the same way by every reader."""

import json
import os

import keras
import numpy as np
import pytest

from keras_mae import MaskedAutoencoder, checkpoints, runs
from keras_mae.callbacks import EpochCheckpoint


def workdir_with(tmp_path, tiny_config, final=True, checkpoint_epoch=None):
    keras.utils.set_random_seed(0)
    model = MaskedAutoencoder(**tiny_config)
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    runs.write_run(workdir, model, {"dataset": "/data/x", "eval_dataset": None}, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    if checkpoint_epoch:
        model.compile(optimizer="adamw")
        model.optimizer.build(model.trainable_variables)
        checkpoint = EpochCheckpoint(os.path.join(workdir, runs.CHECKPOINT_DIR))
        checkpoint.set_model(model)
        checkpoint.save(checkpoint_epoch)
    if final:
        runs.save_exports(model, workdir)
    return model, workdir


def test_a_finished_and_a_running_workdir_load_the_same_way(tiny_config, tmp_path):
    images = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype("float32")
    model, workdir = workdir_with(tmp_path, tiny_config, final=False, checkpoint_epoch=2)
    assert runs.is_workdir(workdir) and not os.path.exists(os.path.join(workdir, runs.MODEL_FILE))
    expected = keras.ops.convert_to_numpy(model.encoder(images))
    for loaded in (checkpoints.load_model(workdir), runs.load_pretrained(workdir)[0]):  # newest checkpoint
        assert isinstance(loaded, MaskedAutoencoder)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.encoder(images)), expected, atol=1e-6)
    encoder, description, _ = runs.load_pretrained(workdir, "encoder")
    assert "epoch 2" in description and encoder.hidden_dim == tiny_config["hidden_dim"]
    runs.save_exports(model, workdir)
    for name in (runs.MODEL_FILE, runs.ENCODER_FILE, runs.ENCODER_WEIGHTS):
        assert os.path.isfile(os.path.join(workdir, name)), name
    assert runs.load_pretrained(workdir, "encoder")[1].endswith(runs.ENCODER_FILE)


def test_run_record_of_a_workdir_and_of_a_keras_file_in_it(tiny_config, tmp_path):
    _, workdir = workdir_with(tmp_path, tiny_config)
    record = runs.read_run(workdir)
    assert record["dataset"] == "/data/x" and record["mean"] == [0.5] * 3
    assert record["model_config"]["hidden_dim"] == tiny_config["hidden_dim"]
    assert runs.run_of(os.path.join(workdir, runs.ENCODER_FILE)) == record == runs.run_of(workdir)
    (tmp_path / "weights.pth").write_bytes(b"")
    assert runs.run_of(str(tmp_path / "weights.pth")) == {} and runs.run_of(str(tmp_path)) == {}
    with pytest.raises(ValueError, match="No run.json in .*pass a workdir written by pretraining"):
        runs.read_run(str(tmp_path))
    empty = tmp_path / "empty"
    os.makedirs(empty)
    (empty / runs.RUN_RECORD).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="has neither model.keras nor a complete checkpoint; pretrain first"):
        runs.load_pretrained(str(empty))
