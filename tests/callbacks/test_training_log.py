"""TrainingLog: one row per epoch, also across a killed and resumed run."""

import json

import keras

import keras_mae
from keras_mae import callbacks


def test_resume_moves_the_rows_of_lost_epochs_aside(tiny_config, tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"epoch": e, "step": 2 * e, "loss": 1.0 / e} for e in (1, 2, 3)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 4, "st')  # killed mid-write
    model = keras_mae.MaskedAutoencoder(**tiny_config)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(4)  # restored from the epoch-2 checkpoint: epoch 3's row is lost work
    training_log = callbacks.TrainingLog(4, str(log))
    training_log.set_model(model)
    training_log.on_train_begin()
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2]
    interrupted = (tmp_path / "log.interrupted.jsonl").read_text().splitlines()
    assert json.loads(interrupted[0])["epoch"] == 3 and interrupted[1].startswith('{"epoch": 4')
    training_log.on_train_begin()  # nothing more to move
    assert len((tmp_path / "log.interrupted.jsonl").read_text().splitlines()) == 2
