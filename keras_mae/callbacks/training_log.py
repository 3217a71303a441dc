"""Per-epoch learning rate and throughput in the logs, a JSON-lines log, and a NaN guard."""

import json
import math
import os
import time

import keras

from keras_mae.utils.atomic import atomic_path
from keras_mae.utils.disk_space import out_of_space_as_one_line


class TrainingLog(keras.callbacks.Callback):
    """Adds `learning_rate` and `images_per_sec` to each epoch's logs and appends them to a .jsonl file.

    Place it before `TensorBoard` in the callback list, so TensorBoard sees
    the added scalars.

    Args:
        batch_size: int. Images per step, for images/s.
        path: str or None. JSON-lines file, one line per epoch (appended: resumed runs continue it).
        validation: dict or None. Written into every line that has validation metrics (`val_*`), to say
            what they were computed on, e.g. `{"val_split": "test", "val_images": 10000}`.
        initial_step: int. Steps of the first epoch trained before this `fit` (resumed inside an epoch); its
            line says `"resumed_at_step_in_epoch"`, as its means are over the steps after that. Defaults to 0.
    """

    def __init__(self, batch_size, path=None, validation=None, initial_step=0):
        super().__init__()
        self.batch_size = batch_size
        self.path = path
        self.validation = dict(validation or {})
        self.initial_step = initial_step
        self._first_epoch = None

    def on_train_begin(self, logs=None):
        """On resume, moves the rows of epochs after the restored checkpoint (work a killed run lost, which this
        run trains again) to `<path minus .jsonl>.interrupted.jsonl`, so each epoch has one row in the log."""
        self._first_epoch = None
        if not (self.path and os.path.isfile(self.path)):
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        with open(self.path) as f:
            lines = [line.rstrip("\n") + "\n" for line in f if line.strip()]
        kept = [line for line in lines if _step(line) <= step]
        if len(kept) == len(lines):
            return
        interrupted = os.path.splitext(self.path)[0] + ".interrupted.jsonl"
        with out_of_space_as_one_line(interrupted), open(interrupted, "a") as f:
            f.writelines(line for line in lines if _step(line) > step)
        with atomic_path(self.path) as temporary, open(temporary, "w") as f:
            f.writelines(kept)

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._start, self._steps = time.perf_counter(), 0
        self._end = self._start

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        self._end = time.perf_counter()  # the epoch's training time stops here, before any validation

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        seconds = self._end - self._start
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["images_per_sec"] = self._steps * self.batch_size / max(seconds, 1e-9)
        if self.path:
            record = {"epoch": epoch + 1, "step": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
                      "seconds": round(seconds, 3), **{k: float(v) for k, v in logs.items()}}
            if any(key.startswith("val_") for key in logs):
                record.update(self.validation)
            if self.initial_step and epoch == self._first_epoch:
                record["resumed_at_step_in_epoch"] = self.initial_step
            with out_of_space_as_one_line(self.path), open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def _step(line):
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):  # a line cut short by a crash: not a finished epoch's row
        return float("inf")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN or Inf loss, naming the step, so no bad checkpoint is written.

    Args:
        checkpoint_dir: str or None. Named in the message as where the last good checkpoint is.
    """

    def __init__(self, checkpoint_dir=None):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.message = (
            f"Loss became {float(loss)} at step {step}; training stopped"
            + (f", the last good checkpoint is kept in {self.checkpoint_dir}" if self.checkpoint_dir else "")
            + ". Lower --base_lr, set --clip_grad (e.g. 3.0), or use --dtype_policy=mixed_bfloat16 instead of float16."
        )
        self.model.stop_training = True
