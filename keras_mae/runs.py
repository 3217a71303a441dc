"""The layout of a pretraining workdir, in one place: what `apps/pretrain.py` writes and every reader resolves.

    workdir/
      run.json                      model config, data (dataset, eval_dataset), normalisation (mean, std)
      model.keras                   the final MaskedAutoencoder
      encoder.keras                 its encoder alone; encoder.weights.h5 its bare weights
      checkpoints/epoch_NNNN.*      crash-safe checkpoints (keras_mae.callbacks.EpochCheckpoint)
      splits/                       the training / evaluation images (keras_mae.data.save_split)
      flags.txt, log.jsonl, tensorboard/, reconstructions/

A workdir whose pretraining still runs has no `model.keras` yet: readers take its newest complete checkpoint.
"""

import json
import os

RUN_RECORD = "run.json"
MODEL_FILE = "model.keras"
ENCODER_FILE = "encoder.keras"
ENCODER_WEIGHTS = "encoder.weights.h5"
CHECKPOINT_DIR = "checkpoints"


def is_workdir(path):
    """True for a folder holding a run.json: a pretraining workdir."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, RUN_RECORD))


def read_run(workdir):
    """The run.json of a pretraining workdir: `model_config`, `dataset`, `eval_dataset`, `mean`, `std`."""
    path = os.path.join(workdir, RUN_RECORD)
    if not os.path.isfile(path):
        raise ValueError(f"No {RUN_RECORD} in {workdir!r}; pass a workdir written by pretraining (apps/pretrain.py).")
    with open(path) as f:
        return json.load(f)


def run_of(path):
    """The run.json of a workdir, or of the workdir a `.keras` file sits in; {} when there is none."""
    if not os.path.isdir(path) and not str(path).endswith(".keras"):
        return {}
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return read_run(folder) if is_workdir(folder) else {}


def write_run(workdir, model, record, mean, std):
    """Writes run.json: `model`'s config, the split `record`'s data and the normalisation."""
    from keras_mae.utils.atomic import write_json_atomic

    write_json_atomic(os.path.join(workdir, RUN_RECORD), {
        "model_config": model.get_config(), "dataset": record["dataset"], "eval_dataset": record["eval_dataset"],
        "mean": [float(m) for m in mean], "std": [float(s) for s in std],
    })


def save_exports(model, workdir):
    """Writes model.keras, encoder.keras and encoder.weights.h5, each written then renamed."""
    from keras_mae.utils.atomic import atomic_path
    from keras_mae.utils.disk_space import require_free_space

    # float32 weights (+ AdamW's two moments in model.keras); HDF5 cannot fail cleanly on a full disk.
    require_free_space(os.path.join(workdir, MODEL_FILE),
                       4 * (3 * model.count_params() + 2 * model.encoder.count_params()))
    for obj, name in ((model, MODEL_FILE), (model.encoder, ENCODER_FILE)):
        with atomic_path(os.path.join(workdir, name)) as tmp:
            obj.save(tmp)
    with atomic_path(os.path.join(workdir, ENCODER_WEIGHTS)) as tmp:
        model.encoder.save_weights(tmp)


def load_pretrained(workdir, part="model"):
    """The pretrained model (or its encoder) of a workdir: its final export, else its newest complete checkpoint.

    Args:
        workdir: str. A pretraining workdir.
        part: str. "model" (the MaskedAutoencoder) or "encoder".

    Returns:
        `(model, description, path)`: the Keras model, what was loaded (for messages) and the file read.
    """
    import keras

    from keras_mae.callbacks.checkpoint import latest_checkpoint
    from keras_mae.models.masked_autoencoder import MaskedAutoencoder

    final = os.path.join(workdir, ENCODER_FILE if part == "encoder" else MODEL_FILE)
    if os.path.isfile(final):
        return keras.saving.load_model(final, compile=False), final, final
    latest = latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
    if latest is None:
        raise ValueError(f"{workdir!r} has neither {os.path.basename(final)} nor a complete checkpoint; pretrain first.")
    weights, epoch, step = latest["weights"], latest["epoch"], latest["step_in_epoch"]
    model = MaskedAutoencoder.from_config(read_run(workdir)["model_config"])
    model.load_weights(weights, skip_mismatch=False)  # the optimizer variables in the file are skipped
    where = f"epoch {epoch}" + (f" and {step} steps of epoch {epoch + 1}" if step else "")
    return (model.encoder if part == "encoder" else model), f"{weights} ({where})", weights
