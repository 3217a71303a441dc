"""Crash-safe epoch checkpoints of model and optimizer state, and resuming from them."""

import glob
import json
import os

import keras
import numpy as np

from keras_mae.utils.atomic import atomic_path, remove_stale_temporaries, write_json_atomic

PATTERN = "epoch_{epoch:04d}"


def complete_checkpoints(directory):
    """[(epoch, weights_path)] of complete checkpoints, oldest first.

    A checkpoint is complete once its `.json` exists; the json is written after
    its weights have been renamed into place, so a crash at any moment leaves
    either the previous checkpoints or a complete new one.
    """
    found = []
    for meta_path in glob.glob(os.path.join(directory, "epoch_*.json")):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        weights = os.path.join(directory, meta.get("weights", ""))
        if os.path.isfile(weights):
            found.append((int(meta["epoch"]), weights))
    return sorted(found)


def restore_latest(model, directory):
    """Loads the newest complete checkpoint into a compiled model; returns its epoch (0 when none).

    Model weights, optimizer state (moments and the iteration counter, hence the
    learning-rate step) and the masking seed state are restored. Temporary files
    of a checkpoint write that was killed midway are removed.
    """
    if os.path.isdir(directory):
        remove_stale_temporaries(directory)
    checkpoints = complete_checkpoints(directory) if os.path.isdir(directory) else []
    if not checkpoints:
        return 0
    epoch, weights = checkpoints[-1]
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(weights)
    with open(weights[: -len(".weights.h5")] + ".json") as f:
        states = json.load(f).get("seed_states")
    variables = _seed_states(model)
    if states is not None and len(states) == len(variables):  # older checkpoints restart the noise
        for variable, state in zip(variables, states):
            variable.assign(np.asarray(state, variable.dtype))
    return epoch


def _seed_states(model):
    """The `SeedGenerator` states (masking noise, drop path): model variables that weight files leave out."""
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer state every `every_n_epochs` epochs, keeping the newest `keep`.

    Weights go to a temporary file renamed into place, then a small json marks
    the checkpoint complete; older checkpoints are deleted only after that.
    Nothing is saved after a non-finite loss, so the last good one survives.

    Args:
        directory: str. Where checkpoints go (created).
        every_n_epochs: int. Defaults to 1.
        keep: int. Complete checkpoints kept; None keeps all. Defaults to 3.
    """

    def __init__(self, directory, every_n_epochs=1, keep=3):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1. Received: every_n_epochs={every_n_epochs}")
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None. Received: keep={keep}")
        self.directory = directory
        self.every_n_epochs = every_n_epochs
        self.keep = keep
        os.makedirs(directory, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every_n_epochs or self.model.stop_training:
            return
        loss = (logs or {}).get("loss")
        if loss is not None and not (float(loss) == float(loss) and abs(float(loss)) != float("inf")):
            return
        self.save(done, logs)

    def save(self, epoch, logs=None):
        name = PATTERN.format(epoch=epoch)
        weights = os.path.join(self.directory, name + ".weights.h5")
        with atomic_path(weights) as tmp:
            self.model.save_weights(tmp)
        meta = {"epoch": epoch, "weights": os.path.basename(weights),
                "seed_states": [keras.ops.convert_to_numpy(v).tolist() for v in _seed_states(self.model)]}
        meta.update({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))})
        write_json_atomic(os.path.join(self.directory, name + ".json"), meta)
        self._prune()

    def _prune(self):
        if self.keep is None:
            return
        for _, weights in complete_checkpoints(self.directory)[: -self.keep]:
            os.remove(weights[: -len(".weights.h5")] + ".json")  # incomplete first, then the weights
            os.remove(weights)
