"""Preemption: a signal during `fit` finishes the step, writes that step's checkpoint and raises `Preempted`;
step checkpoints inside epochs; and a run resumed inside an epoch ends where an uninterrupted one does."""

import json
import os
import signal

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae import callbacks, data, optimizers

pytestmark = pytest.mark.faults

STEPS = 4  # per epoch
ONE_STEP = {"jit_compile": True} if keras.backend.backend() == "jax" else {"run_eagerly": True}


def compiled(tiny_config):
    keras.utils.set_random_seed(0)  # the same initial weights every time
    model = keras_mae.MaskedAutoencoder(**tiny_config, seed=1)
    model.compile(optimizer=optimizers.make_pretrain_optimizer(model, 1e-3), **ONE_STEP)
    return model


def images(tiny_config, epoch=0, step=0):
    h, w = tiny_config["image_size"]
    pixels = np.random.default_rng(0).integers(0, 256, (24, h + 4, w + 4, 3), np.uint8)
    return data.make_pretrain_dataset(pixels, (h, w), 2, seed=3, steps_per_epoch=STEPS, initial_epoch=epoch,
                                      initial_step=step)


class SignalAt(keras.callbacks.Callback):
    """Sends `signum` to this process at the end of global step `step` (before the checkpoint's callback)."""

    def __init__(self, step, signum=signal.SIGTERM):
        super().__init__()
        self.step, self.signum, self.weights = step, signum, None

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            self.weights = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]
            signal.raise_signal(self.signum)


def weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def test_sigterm_finishes_the_step_saves_it_and_raises_preempted(tiny_config, tmp_path):
    directory = str(tmp_path / "checkpoints")
    model = compiled(tiny_config)
    checkpoint = callbacks.EpochCheckpoint(directory, keep=2)
    stop = callbacks.StopOnSignal(checkpoint)
    before = signal.getsignal(signal.SIGTERM)
    sender = SignalAt(STEPS + 3)
    with pytest.raises(callbacks.Preempted) as stopped:
        model.fit(images(tiny_config), epochs=3, steps_per_epoch=STEPS, verbose=0,
                  callbacks=[sender, checkpoint, stop])
    assert signal.getsignal(signal.SIGTERM) is before  # handed back
    error = stopped.value
    assert (error.signal_name, error.exit_code, error.position) == ("SIGTERM", 128 + signal.SIGTERM, (1, 3))
    assert error.checkpoint == os.path.join(directory, "epoch_0001_step_000003.weights.h5")
    assert str(error) == (f"stopped by SIGTERM after epoch 1 and 3 steps of epoch 2; checkpoint written: "
                          f"{error.checkpoint}. Rerun the same command to resume.")
    records = callbacks.checkpoint_records(directory)
    assert [(r["epoch"], r["step_in_epoch"], r["step"]) for r in records] == [(1, 0, STEPS), (1, 3, STEPS + 3)]
    # The checkpoint holds the model after that step (the JAX state synced), and restores it.
    fresh = compiled(tiny_config)
    assert callbacks.restore_latest(fresh, directory) == 1
    assert int(fresh.optimizer.iterations) == STEPS + 3
    for got, want in zip(weights(fresh), sender.weights):
        np.testing.assert_array_equal(got, want)


def test_a_signal_in_an_epoch_s_last_step_lets_the_epoch_end_first(tiny_config, tmp_path):
    directory, log = str(tmp_path / "checkpoints"), str(tmp_path / "log.jsonl")
    model = compiled(tiny_config)
    checkpoint = callbacks.EpochCheckpoint(directory)
    with pytest.raises(callbacks.Preempted) as stopped:
        model.fit(images(tiny_config), epochs=3, steps_per_epoch=STEPS, verbose=0,
                  callbacks=[SignalAt(STEPS), callbacks.TrainingLog(2, log), checkpoint,
                             callbacks.StopOnSignal(checkpoint)])
    assert stopped.value.position == (1, 0)
    assert stopped.value.checkpoint == os.path.join(directory, "epoch_0001.weights.h5")
    with open(log) as f:  # the epoch's row is written: the resumed run starts at epoch 2 and needs it
        assert [json.loads(line)["epoch"] for line in f] == [1]


def test_resumed_inside_an_epoch_ends_where_an_uninterrupted_run_does(tiny_config, tmp_path):
    uninterrupted = compiled(tiny_config)
    uninterrupted.fit(images(tiny_config), epochs=2, steps_per_epoch=STEPS, verbose=0)

    directory = str(tmp_path / "checkpoints")
    model = compiled(tiny_config)
    checkpoint = callbacks.EpochCheckpoint(directory)
    with pytest.raises(callbacks.Preempted):
        model.fit(images(tiny_config), epochs=2, steps_per_epoch=STEPS, verbose=0,
                  callbacks=[SignalAt(2), checkpoint, callbacks.StopOnSignal(checkpoint)])
    resumed = compiled(tiny_config)  # a new process: the model rebuilt, the newest checkpoint restored
    epoch = callbacks.restore_latest(resumed, directory)
    step = callbacks.latest_checkpoint(directory)["step_in_epoch"]
    assert (epoch, step) == (0, 2)
    resumed.fit(images(tiny_config, epoch, step), epochs=epoch + 1, initial_epoch=epoch,
                steps_per_epoch=STEPS - step, verbose=0)  # the rest of the epoch ...
    resumed.fit(images(tiny_config, epoch + 1), epochs=2, initial_epoch=epoch + 1, steps_per_epoch=STEPS,
                verbose=0)  # ... then the epochs after it
    assert int(resumed.optimizer.iterations) == 2 * STEPS
    for got, want in zip(weights(resumed), weights(uninterrupted)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="backend-independent: checked on torch")
def test_every_n_steps_saves_inside_epochs_and_keeps_only_the_newest(tiny_config, tmp_path):
    directory = str(tmp_path / "checkpoints")
    model = compiled(tiny_config)
    checkpoint = callbacks.EpochCheckpoint(directory, keep=1, every_n_steps=3)
    model.fit(images(tiny_config), epochs=2, steps_per_epoch=STEPS, verbose=0, callbacks=[checkpoint])
    # Steps 3 and 6 inside epochs 1 and 2; each step checkpoint is deleted once a newer one is complete.
    records = callbacks.checkpoint_records(directory)
    assert [(r["epoch"], r["step_in_epoch"], r["step"]) for r in records] == [(2, 0, 8)]
    assert sorted(os.listdir(directory)) == ["epoch_0002.json", "epoch_0002.weights.h5"]

    saved = []
    checkpoint = callbacks.EpochCheckpoint(str(tmp_path / "more"), keep=None, every_n_steps=3)
    original = checkpoint.save
    checkpoint.save = lambda epoch, logs=None, step_in_epoch=0: (saved.append((epoch, step_in_epoch)),
                                                                original(epoch, logs, step_in_epoch))
    compiled(tiny_config).fit(images(tiny_config), epochs=3, steps_per_epoch=STEPS, verbose=0, callbacks=[checkpoint])
    # Global steps 3, 6, 9 (12 is an epoch's end: the epoch checkpoint).
    assert saved == [(0, 3), (1, 0), (1, 2), (2, 0), (2, 1), (3, 0)]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="backend-independent: checked on torch")
def test_a_second_signal_acts_at_once_and_outside_fit_the_old_handler_acts(tiny_config, tmp_path):
    # The old handler is Python's own here, whatever an earlier test in this worker process left installed.
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        checkpoint = callbacks.EpochCheckpoint(str(tmp_path / "checkpoints"))
        stop = callbacks.StopOnSignal(checkpoint)
        with stop:
            signal.raise_signal(signal.SIGINT)  # the first: noted, training would stop after the step
            assert stop.received == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):  # the second: Python's own handler, at once
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, earlier)
