"""Graceful preemption: on SIGTERM or SIGINT, finish the step, write a checkpoint, stop.

A cluster or a cloud sends SIGTERM before it takes a machine back (Kubernetes, SLURM with `--signal`, spot
instances); Ctrl-C sends SIGINT. Either way `StopOnSignal` lets the running step finish, has the
`EpochCheckpoint` save the model as it is then (inside an epoch if need be: `fit` resumes from there) and
raises `Preempted` out of `fit`, so code after `fit` (exporting a "final" model) does not run on a half-trained
one. A second signal while stopping acts at once (the previous handler: Ctrl-C's KeyboardInterrupt); the
checkpoints already complete stay so, whatever it interrupts.

    checkpoint = EpochCheckpoint("ckpt", every_n_steps=500)
    with StopOnSignal(checkpoint) as stop:
        model.fit(data, epochs=10, steps_per_epoch=1000, callbacks=[checkpoint, stop])
"""

import logging
import signal
import threading

import keras

from keras_mae import distribution

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """`fit` stopped on a signal after writing a checkpoint.

    Attributes:
        signal_name: str. "SIGTERM" or "SIGINT".
        exit_code: int. 128 + the signal's number, the shell's code for a process ended by that signal.
        checkpoint: str or None. The weights path of the checkpoint written (None after a non-finite loss).
        position: (int, int). The epochs completed and the steps into the next one.
    """

    def __init__(self, signum, checkpoint, position):
        self.signal_name, self.exit_code = signal.Signals(signum).name, 128 + signum
        self.checkpoint, self.position = checkpoint, position
        epoch, step = position
        where = f"after epoch {epoch}" + (f" and {step} steps of epoch {epoch + 1}" if step else "")
        saved = (f"checkpoint written: {checkpoint}" if checkpoint else
                 "no checkpoint written (the loss is not finite; the last good one is kept)")
        super().__init__(f"stopped by {self.signal_name} {where}; {saved}. Rerun the same command to resume.")


class StopOnSignal(keras.callbacks.Callback):
    """On SIGTERM or SIGINT during `fit`: after the current step, `checkpoint.save_current()`, then `Preempted`.

    Place it after `checkpoint` (and last) in the callback list. A signal during an epoch's last step, or between
    steps (validation, an epoch's callbacks), stops after that epoch's end callbacks (its logs and checkpoint),
    or at the next step. The handlers are installed
    from `on_train_begin` (or entering the `with` block) to `on_train_end` (or leaving it), in the main thread
    only; outside them the previous handlers act.

    Args:
        checkpoint: `EpochCheckpoint`. The callback that writes the checkpoint.
        signals: signals to catch. Defaults to (SIGTERM, SIGINT).
    """

    def __init__(self, checkpoint, signals=SIGNALS):
        super().__init__()
        self.checkpoint = checkpoint
        self.signals = tuple(signals)
        self.received = None  # the signal number caught, until it is acted on
        self._previous = {}
        self._processes = False  # whether the processes of a multi-process job must agree on stopping

    def __enter__(self):
        self.install()
        return self

    def __exit__(self, *exc_info):
        self.uninstall()

    def install(self):
        """Catches `signals` (in the main thread; elsewhere Python cannot, and a warning says so)."""
        if self._previous:
            return
        if threading.current_thread() is not threading.main_thread():
            logging.warning("StopOnSignal: not in the main thread, so SIGTERM and SIGINT are not caught.")
            return
        self.received = None
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.signals}

    def uninstall(self):
        """Gives the signals back to their previous handlers."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
            logging.warning("%s received: stopping after this step with a checkpoint (send it again to stop now).",
                            signal.Signals(signum).name)
            return
        handler = self._previous.get(signum, signal.SIG_DFL)  # the second one: as if we were not here
        self.uninstall()
        if callable(handler):
            handler(signum, frame)
        else:
            signal.raise_signal(signum)

    def on_train_begin(self, logs=None):
        self.install()
        self._processes = distribution.torch_ddp.active() or distribution.reads_are_collective()

    def on_train_end(self, logs=None):
        self.uninstall()

    def on_train_batch_end(self, batch, logs=None):
        # After an epoch's last step its end's callbacks run first (its log row, its checkpoint): on_epoch_end stops.
        if self._agreed() is not None and self.checkpoint.position[1]:
            self._stop(logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._agreed() is not None:
            self._stop(logs)

    def _agreed(self):
        """The signal received, by this process or (torch DDP, multi-process JAX) by any other: every process stops
        after the same step, or one would wait forever in the next step's collectives."""
        if self._processes:
            self.received = distribution.max_over_processes(self.received or 0) or None
        return self.received

    def _stop(self, logs):
        signum, self.received = self.received, None
        path = self.checkpoint.save_current(logs)
        self.uninstall()
        if self._processes:  # none exits (and has its launcher stop the others) before process 0's write is done
            distribution.barrier("keras_mae_preempted")
        raise Preempted(signum, path, self.checkpoint.position)
