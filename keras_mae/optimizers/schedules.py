"""Per-step linear warmup + half-cosine decay, as facebookresearch/mae `util/lr_sched.py`."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mae")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to a peak, then half-cosine decay to a minimum.

    The official `adjust_learning_rate` evaluates at a fractional epoch, this
    at the step Keras passes to schedules: its batch counter, which counts
    gradient-accumulation micro-batches too (like the official
    `data_iter_step`), so `total_steps = epochs * batches_per_epoch`:

        step < warmup_steps:  lr = peak * step / warmup_steps
        otherwise:            lr = min + (peak - min) * 0.5 * (1 + cos(pi *
                                   (step - warmup_steps) / (total_steps - warmup_steps)))

    Steps past `total_steps` stay at `min_learning_rate`. Like the official
    code, the very first step (step 0) uses a learning rate of 0 when there is
    a warmup.

    Args:
        peak_learning_rate: float. Learning rate at the end of the warmup
            (the official `args.lr = blr * eff_batch_size / 256`).
        warmup_steps: int. Number of linear-warmup steps, >= 0.
        total_steps: int. Step at which the cosine reaches the minimum,
            > warmup_steps.
        min_learning_rate: float. Final learning rate. Defaults to 0.0.

    >>> schedule = WarmupCosineDecay(1.0, warmup_steps=2, total_steps=6)
    >>> [round(float(schedule(s)), 3) for s in range(8)]
    [0.0, 0.5, 1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """

    def __init__(
        self, peak_learning_rate, warmup_steps, total_steps, min_learning_rate=0.0
    ):
        if warmup_steps < 0:
            raise ValueError(
                f"`warmup_steps` must be >= 0. Received: warmup_steps={warmup_steps}"
            )
        if total_steps <= warmup_steps:
            raise ValueError(
                "`total_steps` must be greater than `warmup_steps`. Received: "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_learning_rate = min_learning_rate

    def __call__(self, step):
        step = ops.minimum(ops.cast(step, "float32"), float(self.total_steps))
        peak = float(self.peak_learning_rate)
        low = float(self.min_learning_rate)
        warmup = float(self.warmup_steps)
        # Both branches are evaluated (no Python control flow on tensors, so it
        # traces under jit); max(warmup, 1) keeps the unused branch finite.
        warmup_lr = peak * step / max(warmup, 1.0)
        progress = (step - warmup) / (float(self.total_steps) - warmup)
        cosine_lr = low + (peak - low) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < warmup, warmup_lr, cosine_lr)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "min_learning_rate": self.min_learning_rate,
        }
