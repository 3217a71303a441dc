"""Crash-safe epoch checkpoints of model and optimizer state, and resuming from them."""

import glob
import json
import math
import os
import tempfile

import keras
import numpy as np

from keras_mae.distribution import is_chief, reads_are_collective
from keras_mae.utils.atomic import atomic_path, remove_stale_temporaries, write_json_atomic
from keras_mae.utils.disk_space import require_free_space

PATTERN = "epoch_{epoch:04d}"
STEP_PATTERN = "epoch_{epoch:04d}_step_{step:06d}"  # `step` batches into the epoch after `epoch` complete ones


def checkpoint_records(directory):
    """The complete checkpoints' records, oldest first: their json, with `weights` made a full path.

    Each record has `epoch` (epochs completed) and `step_in_epoch` (batches of the next epoch trained on: 0 for
    a checkpoint written at an epoch's end, more for one written inside an epoch).
    """
    found = []
    for meta_path in glob.glob(os.path.join(glob.escape(directory), "epoch_*.json")):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            meta["epoch"], meta["step_in_epoch"] = int(meta["epoch"]), int(meta.get("step_in_epoch", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        meta["weights"] = os.path.join(directory, str(meta.get("weights", "")))
        if os.path.isfile(meta["weights"]):
            found.append(meta)
    return sorted(found, key=lambda meta: (meta["epoch"], meta["step_in_epoch"]))


def complete_checkpoints(directory):
    """[(epoch, weights_path)] of complete checkpoints, oldest first (`epoch`: the epochs they completed).

    A checkpoint is complete once its `.json` exists; the json is written after
    its weights have been renamed into place, so a crash at any moment leaves
    either the previous checkpoints or a complete new one.
    """
    return [(meta["epoch"], meta["weights"]) for meta in checkpoint_records(directory)]


def latest_checkpoint(directory):
    """The newest complete checkpoint's record (see `checkpoint_records`), or None."""
    records = checkpoint_records(directory) if os.path.isdir(directory) else []
    return records[-1] if records else None


def restore_latest(model, directory):
    """Loads the newest complete checkpoint into a compiled model; returns its epoch (0 when none).

    Model weights, optimizer state (moments and the iteration counter, hence the
    learning-rate step) and the masking seed state are restored. Temporary files
    of a checkpoint write that was killed midway are removed. A checkpoint written
    inside an epoch returns the epochs it completed; `latest_checkpoint(directory)
    ["step_in_epoch"]` says how far into the next one it is.
    """
    if os.path.isdir(directory):
        remove_stale_temporaries(directory)
    meta = latest_checkpoint(directory)
    if meta is None:
        return 0
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(meta["weights"])
    states = meta.get("seed_states")
    variables = _seed_states(model)
    if states is not None and len(states) == len(variables):  # older checkpoints restart the noise
        for variable, state in zip(variables, states):
            variable.assign(np.asarray(state, variable.dtype))
    return meta["epoch"]


def _finite(logs):
    """Whether the logs' loss (if any) is finite: no checkpoint is written after a NaN or Inf."""
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


def _seed_states(model):
    """The `SeedGenerator` states (masking noise, drop path): model variables that weight files leave out."""
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer state every `every_n_epochs` epochs (and every `every_n_steps` steps), keeping the
    newest `keep`.

    Weights go to a temporary file renamed into place, then a small json marks
    the checkpoint complete; older checkpoints are deleted only after that.
    Nothing is saved after a non-finite loss, so the last good one survives.
    A checkpoint written inside an epoch (`every_n_steps`, `save_current`) is for
    resuming only: it is deleted once a newer checkpoint is complete.

    Args:
        directory: str. Where checkpoints go (created).
        every_n_epochs: int. Defaults to 1.
        keep: int. Complete end-of-epoch checkpoints kept; None keeps all. Defaults to 3.
        every_n_steps: int or None. Also saves when the global step (epochs x steps per epoch + steps into the
            epoch) is a multiple of this; None or 0 saves at epoch ends only. Defaults to None.
        initial_step: int. Batches of the first epoch that were trained before this `fit` (a run resumed from
            a checkpoint written inside an epoch, whose `fit` runs that epoch's remaining steps). Defaults to 0.
        writer: bool or None. Whether this process writes the checkpoints; None: process 0 of a multi-process
            job (`keras_mae.distribution.is_chief`). The others keep track of the same positions and paths
            (what a preemption reports) and write nothing. Defaults to None.
    """

    def __init__(self, directory, every_n_epochs=1, keep=3, every_n_steps=None, initial_step=0, writer=None):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1. Received: every_n_epochs={every_n_epochs}")
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None. Received: keep={keep}")
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 1, or 0 or None for none. Received: every_n_steps={every_n_steps}")
        if initial_step < 0:
            raise ValueError(f"initial_step must be >= 0. Received: initial_step={initial_step}")
        self.directory = directory
        self.every_n_epochs = every_n_epochs
        self.keep = keep
        self.every_n_steps = every_n_steps or None
        self.initial_step = initial_step
        self.position = None  # (epochs completed, steps into the next) of the weights in the model now
        self.saved = None  # (position, weights path) of the newest checkpoint this callback wrote
        self.writer = is_chief() if writer is None else writer
        if self.writer:
            os.makedirs(directory, exist_ok=True)

    def on_train_begin(self, logs=None):
        self._first_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._offset = self.initial_step if epoch == self._first_epoch else 0
        self._epoch_length = self._offset + (self.params or {}).get("steps", 0)
        self.position = (epoch, self._offset)

    def on_train_batch_end(self, batch, logs=None):
        epoch, step = self.position[0], self._offset + batch + 1
        if step >= self._epoch_length:  # the epoch's last step: its end's checkpoint is on_epoch_end's
            self.position = (epoch + 1, 0)
            return
        self.position = (epoch, step)
        if self.every_n_steps and not (epoch * self._epoch_length + step) % self.every_n_steps and _finite(logs):
            self.save_current(logs)

    def on_epoch_end(self, epoch, logs=None):
        self.position = (epoch + 1, 0)
        if (epoch + 1) % self.every_n_epochs or self.model.stop_training or not _finite(logs):
            return
        if self.saved is None or self.saved[0] != self.position:
            self.save(epoch + 1, logs)

    def save_current(self, logs=None):
        """Saves the model as it is now (after its last finished step) unless that is saved already; returns the
        checkpoint's weights path (None, writing nothing, after a non-finite loss). What a preemption handler calls."""
        if self.position is None:
            raise ValueError("save_current needs a position: call it during `fit`, after a step.")
        if not _finite(logs):
            return None
        if self.saved is None or self.saved[0] != self.position:
            self.save(self.position[0], logs, self.position[1])
        return self.saved[1]

    def save(self, epoch, logs=None, step_in_epoch=0):
        """Writes the checkpoint of `epoch` completed epochs and `step_in_epoch` steps into the next one."""
        name = STEP_PATTERN.format(epoch=epoch, step=step_in_epoch) if step_in_epoch else PATTERN.format(epoch=epoch)
        weights = os.path.join(self.directory, name + ".weights.h5")
        if not self.writer:  # process 0 writes this very checkpoint
            if reads_are_collective():  # multi-process JAX: every process reads the variables with process 0
                with tempfile.TemporaryDirectory() as scratch:
                    self.model.save_weights(os.path.join(scratch, os.path.basename(weights)))
            self.saved = ((epoch, step_in_epoch), weights)
            return
        require_free_space(weights, self._expected_size())  # HDF5 cannot fail cleanly on a full disk
        with atomic_path(weights) as tmp:
            self.model.save_weights(tmp)
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "weights": os.path.basename(weights),
                "step": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
                "seed_states": [keras.ops.convert_to_numpy(v).tolist() for v in _seed_states(self.model)]}
        meta.update({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))})
        write_json_atomic(os.path.join(self.directory, name + ".json"), meta)
        self.saved = ((epoch, step_in_epoch), weights)
        self._prune()

    def _expected_size(self):
        """The next checkpoint's bytes: the newest one's size (the same variables), else the variables' bytes."""
        records = checkpoint_records(self.directory)
        if records:
            return os.path.getsize(records[-1]["weights"])
        variables = self.model.weights + (self.model.optimizer.variables if self.model.optimizer else [])
        return int(sum(np.prod(v.shape, dtype=np.int64) * np.dtype(v.dtype).itemsize + 2048 for v in variables))

    def _prune(self):
        records = checkpoint_records(self.directory)
        newest = records[-1]["weights"] if records else None
        epoch_ends = [meta for meta in records if not meta["step_in_epoch"]]
        stale = [meta for meta in records if meta["step_in_epoch"] and meta["weights"] != newest]
        if self.keep is not None:
            stale += epoch_ends[: -self.keep]
        for meta in stale:
            os.remove(meta["weights"][: -len(".weights.h5")] + ".json")  # incomplete first, then the weights
            os.remove(meta["weights"])
