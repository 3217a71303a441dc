"""The training recipe the apps share: its flags (defined once, defaults per app), the run record, a resumable fit.

Each app defines its flags, calls `define_training_flags` with its own defaults, and trains with `resume` + `fit`:
resume from the newest complete checkpoint, the callbacks every run has (NaN guard, log.jsonl, checkpoints,
TensorBoard), and a one-line stop on a non-finite loss.
"""

import os
import sys

from absl import flags

import common

FLAGS = flags.FLAGS
APPS_DIR = os.path.dirname(os.path.abspath(__file__))


def define_training_flags(epochs, warmup_epochs, batch_size, base_lr, weight_decay, min_lr=0.0, keep_checkpoints=2,
                          verbose=2, accumulation=False, compilation=False, seed_help="Seed of everything random.",
                          base_lr_help="Learning rate = base_lr * batch_size / 256.",
                          weight_decay_help="Weight decay."):
    """The recipe's flags, with the app's defaults.

    Args:
        epochs, warmup_epochs, batch_size, base_lr, weight_decay, min_lr, keep_checkpoints, verbose: defaults.
        accumulation: bool. Also --accum_steps and --clip_grad (the optimizer-update flags of pretraining and
            fine-tuning).
        compilation: bool. Also --jit_compile and --dtype_policy.
        seed_help, base_lr_help, weight_decay_help: what these flags mean in this app.
    """
    flags.DEFINE_integer("epochs", epochs, "Training epochs.")
    flags.DEFINE_integer("warmup_epochs", warmup_epochs, "Linear warm-up epochs.")
    flags.DEFINE_integer("batch_size", batch_size, "Images per step (per optimizer update: batch_size * accum_steps).")
    flags.DEFINE_float("base_lr", base_lr, base_lr_help)
    flags.DEFINE_float("lr", None, "Absolute peak learning rate; overrides the base_lr rule.")
    flags.DEFINE_float("min_lr", min_lr, "Learning rate at the end of the cosine.")
    flags.DEFINE_float("weight_decay", weight_decay, weight_decay_help)
    flags.DEFINE_integer("steps_per_epoch", None, "Cap steps per epoch (smoke runs); default one pass.")
    flags.DEFINE_integer("seed", 0, seed_help)
    flags.DEFINE_integer("checkpoint_every", 1, "Epochs between checkpoints.")
    flags.DEFINE_integer("keep_checkpoints", keep_checkpoints, "Complete end-of-epoch checkpoints kept.")
    flags.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint every N steps inside epochs (0: off), to "
                         "resume mid-epoch; kept until the next checkpoint. SIGTERM / Ctrl-C also checkpoint.")
    flags.DEFINE_integer("verbose", verbose, "Keras progress output: 0 silent, 1 bar, 2 one line per epoch.")
    if accumulation:
        flags.DEFINE_integer("accum_steps", 1, "Gradient accumulation steps (official accum_iter).")
        flags.DEFINE_float("clip_grad", None, "Clip the global gradient norm (the official answer to fp16 NaNs).")
    if compilation:
        flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                          "Compiles the train step: XLA on jax / tensorflow; on torch, pretraining's step runs as "
                          "one traced graph compiled by TorchInductor (keras_mae/models/torch_captured_step.py; use "
                          "it on GPUs), fine-tuning's through torch.compile. auto: Keras's choice (XLA on jax and "
                          "on TensorFlow with a GPU; eager on torch).")
        flags.DEFINE_string("dtype_policy", "float32", "float32, mixed_bfloat16 or mixed_float16.")


def check_training_flags(*counts):
    """One-line errors for recipe flags out of range; `counts` names more flags that must be >= 1."""
    names = ["epochs", "batch_size", "checkpoint_every", "keep_checkpoints", *counts]
    if "accum_steps" in FLAGS:
        names.append("accum_steps")
    for name in names:
        if getattr(FLAGS, name) < 1:
            raise common.UserError(f"--{name} must be at least 1. Received: --{name}={getattr(FLAGS, name)}")
    check_flag_ranges()
    if not 0 <= FLAGS.warmup_epochs <= FLAGS.epochs:
        raise common.UserError(f"--warmup_epochs must be in [0, epochs={FLAGS.epochs}]. Received: {FLAGS.warmup_epochs}")
    if "dtype_policy" in FLAGS and FLAGS.dtype_policy not in ("float32", "mixed_bfloat16", "mixed_float16", "bfloat16"):
        raise common.UserError(f"--dtype_policy must be float32, mixed_bfloat16 or mixed_float16. "
                               f"Received: {FLAGS.dtype_policy}")


# The range of every numeric flag the apps define (checked where the app defines it and it has a value):
# (low, low included, high, high included); None is unbounded.
FLAG_RANGES = {
    **{name: (0, False, None, False) for name in ("base_lr", "lr", "mlp_base_lr", "clip_grad", "layer_decay")},
    **{name: (0, True, None, False) for name in ("min_lr", "weight_decay", "mlp_weight_decay", "mixup_alpha",
                                                 "cutmix_alpha", "eval_every", "knn_every", "seed",
                                                 "checkpoint_every_steps")},
    **{name: (0, True, 1, False) for name in ("mask_ratio", "drop_path_rate", "head_dropout", "label_smoothing",
                                              "random_erasing_prob", "val_fraction")},
    **{name: (0, True, 1, True) for name in ("switch_prob",)},
    **{name: (1, True, None, False) for name in ("steps_per_epoch", "num_reconstructions", "reconstruction_every",
                                                 "num_eval_images", "max_per_class", "eval_batch_size",
                                                 "features_batch_size")},
}


def check_flag_ranges():
    """One line naming the flag, its value and its range, for the first numeric flag out of range."""
    for name, (low, low_in, high, high_in) in FLAG_RANGES.items():
        value = getattr(FLAGS, name) if name in FLAGS else None
        if value is None:
            continue
        if (low is not None and (value < low or (value == low and not low_in))) or (
                high is not None and (value > high or (value == high and not high_in))):
            span = f"{'[' if low_in else '('}{low}, " + (f"{high}{']' if high_in else ')'}" if high is not None else "inf)")
            raise common.UserError(f"--{name} must be in {span}. Received: --{name}={value}")


def steps_per_epoch(num_examples, dataset, allow_none=False):
    """Full batches per epoch (capped by --steps_per_epoch); a one-line error when there are too few images.

    Args:
        num_examples: int or None. Training images (None for a stream of unknown length).
        dataset: str. Named in the error.
        allow_none: bool. Return 0 rather than fail when there are too few (the caller has other data).
    """
    steps = (num_examples or 0) // FLAGS.batch_size
    if FLAGS.steps_per_epoch:
        steps = min(steps, FLAGS.steps_per_epoch) if steps or num_examples is not None else FLAGS.steps_per_epoch
    if steps < 1 and not allow_none:
        raise common.UserError(f"{dataset!r} has {num_examples} training images, fewer than "
                               f"--batch_size={FLAGS.batch_size}; lower --batch_size.")
    return steps


def schedule(steps, base_lr=None):
    """Warm-up then half-cosine, per step; peak lr = --lr, else base_lr x batch_size x accum_steps / 256."""
    from keras_mae import optimizers

    accum = FLAGS.accum_steps if "accum_steps" in FLAGS else 1
    base_lr = FLAGS.base_lr if base_lr is None else base_lr
    peak_lr = FLAGS.lr if FLAGS.lr is not None else base_lr * FLAGS.batch_size * accum / 256
    return optimizers.WarmupCosineDecay(peak_lr, FLAGS.warmup_epochs * steps, FLAGS.epochs * steps, FLAGS.min_lr)


def compile_options():
    """`jit_compile` and the optimizer-update arguments of the apps that define them, for `compile` and optimizers."""
    options = {}
    if "jit_compile" in FLAGS:
        options["jit_compile"] = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    return options


def accumulation_options():
    """`gradient_accumulation_steps` and `global_clipnorm` of the optimizer."""
    return {"gradient_accumulation_steps": FLAGS.accum_steps if FLAGS.accum_steps > 1 else None,
            "global_clipnorm": FLAGS.clip_grad}


def run_flags():
    """The names of every flag the app and its helper modules in apps/ define: what flags.txt records."""
    names = []
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        path = getattr(sys.modules.get(module), "__file__", None) if module != sys.argv[0] else sys.argv[0]
        if path and os.path.dirname(os.path.abspath(path)) == APPS_DIR:
            names += [flag.name for flag in module_flags if flag.name not in names]
    return [name for name in names if name not in ("flagfile",)]


def write_flags(workdir):
    """workdir/flags.txt: the resolved flags, so `--flagfile=workdir/flags.txt` replays the run (process 0 only)."""
    if not common.chief():
        return
    common.write_flags(FLAGS, os.path.join(workdir, "flags.txt"), run_flags())


# Flags that change how a run reports or checkpoints, not what it computes: free to differ on resume.
FREE_FLAGS = ("verbose", "workdir", "allow_flag_change", "checkpoint_every", "keep_checkpoints",
              "checkpoint_every_steps", "eval_every",
              "num_eval_images", "knn_every", "reconstruction_every", "num_reconstructions")


def define_resume_flags():
    flags.DEFINE_list("allow_flag_change", [], "Flags that may differ from the workdir's flags.txt when resuming "
                      "(e.g. epochs); any other change is refused, as it would mix two runs in one workdir.")


def check_same_run(workdir, model_flags, restart_flags=()):
    """Refuses, in one line, to resume `workdir`'s checkpoints with flags that would mix two runs.

    The workdir's flags.txt is compared with this command's flags. `FREE_FLAGS` may differ, flags in
    --allow_flag_change may differ (and are printed), `model_flags` never do (the checkpoints hold that model).
    A change to one of `restart_flags` (the downstream apps' encoder and data, on which they start afresh) skips
    the check.

    Returns:
        bool: whether `workdir` holds checkpoints to resume from.
    """
    from keras_mae import callbacks

    path = os.path.join(workdir, "flags.txt")
    if not callbacks.complete_checkpoints(os.path.join(workdir, "checkpoints")):
        return False
    if not os.path.isfile(path):
        return True
    recorded, current = common.read_flag_lines(FLAGS, path), common.flag_lines(FLAGS, run_flags())
    changed = [name for name in sorted(set(recorded) | set(current))
               if recorded.get(name) != current.get(name) and name not in FREE_FLAGS]
    if any(name in restart_flags for name in changed):
        return False

    def listed(names):
        return "; ".join(f"{recorded.get(name, f'no --{name}')} -> {current.get(name, f'no --{name}')}"
                         for name in names)

    model = [name for name in changed if name in model_flags]
    if model:
        raise common.UserError(f"workdir {workdir!r} holds checkpoints of another model ({listed(model)}); "
                               "pass a new --workdir for this model.")
    refused = [name for name in changed if name not in FLAGS.allow_flag_change]
    if refused:
        raise common.UserError(
            f"workdir {workdir!r} was trained with other flags ({listed(refused)}); resume with its flags "
            f"(--flagfile={path}), pass a new --workdir, or --allow_flag_change={','.join(refused)} to change them.")
    if changed:
        print(f"Flags changed on resume (--allow_flag_change): {listed(changed)}")
    return True


def resume(model, workdir, name=None):
    """Restores the newest complete checkpoint of workdir/checkpoints into `model`.

    Returns:
        `(epoch, step_in_epoch)` to start at: the epochs the checkpoint completed, and the steps of the next one
        it had trained (0 unless it was written inside an epoch: --checkpoint_every_steps, SIGTERM, Ctrl-C).
    """
    import keras

    from keras_mae import callbacks

    checkpoint_dir = os.path.join(workdir, "checkpoints")
    initial_epoch = callbacks.restore_latest(model, checkpoint_dir)
    latest = callbacks.latest_checkpoint(checkpoint_dir)
    if latest is None:
        return 0, 0
    step = latest["step_in_epoch"]
    what = f"Resuming {name} from epoch {initial_epoch}" if name else f"Resuming from epoch {initial_epoch}"
    where = f", {step} steps into epoch {initial_epoch + 1}" if step else ""
    print(f"{what}{where} (step {int(keras.ops.convert_to_numpy(model.optimizer.iterations))}) in {checkpoint_dir}")
    return initial_epoch, step


def fit(model, train, workdir, initial, steps, validation=None, validation_freq=1, validation_info=None,
        monitors=(), summaries=()):
    """Trains from `initial` to --epochs with the callbacks every run has; stops in one line on a NaN loss or a
    signal (SIGTERM, SIGINT: after a checkpoint, with exit code 128 + the signal's number).

    Args:
        model: compiled Keras model.
        train: endless dataset of training batches, or a function `(epoch, step_in_epoch) -> dataset` that starts
            at that step (an epoch-indexed pipeline: a run resumed inside an epoch sees the very batches it would
            have); a dataset is read from its start again for the rest of the epoch a resumed run was in.
        workdir: str. Receives checkpoints/, log.jsonl and tensorboard/.
        initial: `(epoch, step_in_epoch)` from `resume`.
        steps: int. Steps per epoch.
        validation: dataset or None. Evaluated every `validation_freq` epochs.
        validation_info: dict or None. What the validation metrics were computed on, for log.jsonl.
        monitors: callbacks that add metrics to the epoch's logs (before log.jsonl and TensorBoard see them).
        summaries: callbacks that write their own summaries (after the checkpoint).
    """
    import keras

    from keras_mae import callbacks, distribution
    from keras_mae.distribution import is_chief

    checkpoint_dir = os.path.join(workdir, "checkpoints")
    chief = is_chief()
    nan_guard = callbacks.StopOnNonFiniteLoss(checkpoint_dir)
    common.training_started()
    epoch, step = initial
    data = train if callable(train) else (lambda epoch, step: train)
    # A run resumed inside an epoch first trains that epoch's remaining steps, then the epochs after it.
    phases = [(epoch, step, epoch + 1)] if step else []
    phases += [(epoch + bool(step), 0, FLAGS.epochs)]
    try:
        for first, offset, last in phases:
            if first >= last:
                continue
            checkpoint = callbacks.EpochCheckpoint(checkpoint_dir, FLAGS.checkpoint_every, FLAGS.keep_checkpoints,
                                                   FLAGS.checkpoint_every_steps, initial_step=offset)
            tensorboard = keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"), write_graph=False)
            # One writer: process 0 of a multi-process job writes log.jsonl, TensorBoard and the checkpoints. The
            # others run the same callbacks writing nothing: on JAX every process must read the model's state
            # after the same steps (each read is collective), and the summaries' forward passes are collective.
            log = callbacks.TrainingLog(FLAGS.batch_size, os.path.join(workdir, "log.jsonl") if chief else None,
                                        validation=validation_info, initial_step=offset)
            writers = [log, checkpoint, *summaries, tensorboard] if chief else [log, checkpoint, *summaries]
            with callbacks.StopOnSignal(checkpoint) as stop:
                model.fit(
                    data(first, offset), epochs=last, initial_epoch=first, steps_per_epoch=steps - offset,
                    validation_data=validation, validation_freq=max(validation_freq, 1),
                    verbose=FLAGS.verbose if chief else 0, shuffle=False,
                    callbacks=[*distribution.callbacks(), nan_guard, *monitors, *writers, stop],
                )
            if nan_guard.message:
                break
    except callbacks.Preempted as stopped:
        if chief:
            tensorboard.on_train_end()  # flushes the event files (fit ended by the exception, not by its end)
        print(f"{os.path.basename(sys.argv[0])}: {stopped}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    if nan_guard.message:
        raise SystemExit(f"{os.path.basename(sys.argv[0])}: {nan_guard.message}")


def save(model, path):
    """`model.save(path)`, written then renamed: a crash never leaves half a file (process 0 only)."""
    from keras_mae.utils.atomic import atomic_path

    if not common.chief():
        return
    with atomic_path(path) as tmp:
        model.save(tmp)
