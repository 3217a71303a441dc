"""Per-step linear warmup + half-cosine decay, as facebookresearch/mae `util/lr_sched.py`."""

import keras


@keras.saving.register_keras_serializable(package="keras_mae")
class WarmupCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Linear warmup from 0 to a peak, then half-cosine decay to a minimum.

    This is Keras's `CosineDecay(initial_learning_rate=0, warmup_target=peak,
    warmup_steps=warmup_steps, decay_steps=total_steps - warmup_steps,
    alpha=min / peak)` under the official names (its arguments and config
    are those of keras_mae 0.1, so saved schedules load). The official
    `adjust_learning_rate` evaluates at a fractional epoch, this at the step
    Keras passes to schedules: its batch counter, which counts
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
        min_learning_rate: float. Final learning rate. Defaults to 0.0. Must
            be 0 when `peak_learning_rate` is 0 (Keras's `alpha = min / peak`;
            the official formula would climb from 0 to the minimum).

    >>> schedule = WarmupCosineDecay(1.0, warmup_steps=2, total_steps=6)
    >>> [round(float(schedule(s)), 3) for s in range(8)]
    [0.0, 0.5, 1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """

    def __init__(self, peak_learning_rate, warmup_steps, total_steps, min_learning_rate=0.0):
        if warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be >= 0. Received: warmup_steps={warmup_steps}")
        if total_steps <= warmup_steps:
            raise ValueError(
                "`total_steps` must be greater than `warmup_steps`. Received: "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        if not peak_learning_rate and min_learning_rate:
            raise ValueError(
                "`min_learning_rate` must be 0 when `peak_learning_rate` is 0 (or give a positive peak). Received: "
                f"peak_learning_rate={peak_learning_rate}, min_learning_rate={min_learning_rate}"
            )
        super().__init__(
            initial_learning_rate=0.0,
            decay_steps=total_steps - warmup_steps,
            alpha=min_learning_rate / peak_learning_rate if peak_learning_rate else 0.0,
            name="WarmupCosineDecay",
            warmup_target=peak_learning_rate,
            warmup_steps=warmup_steps,
        )
        self.peak_learning_rate = peak_learning_rate
        self.total_steps = total_steps
        self.min_learning_rate = min_learning_rate

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "min_learning_rate": self.min_learning_rate,
        }
