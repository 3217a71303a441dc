"""Runs an app (argv[1], e.g. apps/pretrain.py); the process whose rank is $KILL_RANK (torchrun's RANK,
KERAS_DISTRIBUTION_PROCESS_ID, TF_CONFIG's index; default 0) sends itself $KILL_SIGNAL (default SIGKILL) right
after the $KILL_AT_STEP-th train step it runs: one process of a job dying, or preempted, at a known point.
(Steps are counted here: reading the model's step in one process only would be a collective the others never
join, on JAX.)"""

import json
import os
import runpy
import signal
import sys

from keras_mae.callbacks import EpochCheckpoint


def rank():
    for variable in ("RANK", "KERAS_DISTRIBUTION_PROCESS_ID"):
        if variable in os.environ:
            return int(os.environ[variable])
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


def main():
    if rank() == int(os.environ.get("KILL_RANK", "0")):
        at_step, steps = int(os.environ["KILL_AT_STEP"]), []
        after_batch = EpochCheckpoint.on_train_batch_end

        def on_train_batch_end(self, batch, logs=None):
            after_batch(self, batch, logs)
            steps.append(batch)
            if len(steps) == at_step:
                os.kill(os.getpid(), getattr(signal, os.environ.get("KILL_SIGNAL", "SIGKILL")))

        EpochCheckpoint.on_train_batch_end = on_train_batch_end
    script = sys.argv.pop(1)
    sys.argv[0] = script
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
