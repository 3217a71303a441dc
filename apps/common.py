"""What the apps share: model flags named as the constructor arguments, user-error handling, run records."""

import os
import shutil
import sys
import warnings

from absl import flags

from keras_mae.models.presets import PRESETS, preset_config

# Constructor arguments settable from the command line; None keeps the preset's value.
MODEL_FLAGS = {
    "image_size": (flags.DEFINE_integer, "Square image size (pixels)."),
    "patch_size": (flags.DEFINE_integer, "Patch side (pixels)."),
    "num_channels": (flags.DEFINE_integer, "Image channels: 1, 3 or 4."),
    "hidden_dim": (flags.DEFINE_integer, "Encoder width."),
    "num_layers": (flags.DEFINE_integer, "Encoder blocks."),
    "num_heads": (flags.DEFINE_integer, "Encoder attention heads."),
    "mlp_dim": (flags.DEFINE_integer, "Encoder MLP width."),
    "decoder_hidden_dim": (flags.DEFINE_integer, "Decoder width."),
    "decoder_num_layers": (flags.DEFINE_integer, "Decoder blocks."),
    "decoder_num_heads": (flags.DEFINE_integer, "Decoder attention heads."),
    "decoder_mlp_dim": (flags.DEFINE_integer, "Decoder MLP width."),
    "mask_ratio": (flags.DEFINE_float, "Fraction of patches removed, in [0, 1)."),
    "norm_pix_loss": (flags.DEFINE_boolean, "Per-patch normalised pixel targets."),
    "mask_strategy": (flags.DEFINE_string, "random, block or grid."),
    "drop_path_rate": (flags.DEFINE_float, "Encoder stochastic depth."),
}
# The model flags that set the shapes of the weights: a checkpoint only loads into the same.
ARCHITECTURE_FLAGS = ("preset", "image_size", "patch_size", "num_channels", "hidden_dim", "num_layers", "num_heads",
                      "mlp_dim", "decoder_hidden_dim", "decoder_num_layers", "decoder_num_heads", "decoder_mlp_dim")


def define_data_flags(default=None, help_text="Labelled dataset (as pretrain.py's --dataset); defaults to the "
                      "pretraining's."):
    """--dataset (with `default` and `help_text`), --data_dir, --train_split and the split flags."""
    flags.DEFINE_string("dataset", default, help_text)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir (prepared datasets such as ImageNet).")
    flags.DEFINE_string("train_split", "train", "Training split of builtin / TFDS data.")
    define_split_flags()


def define_split_flags():
    """The flags that choose the evaluation images (keras_mae.data.split_dataset), the same in every app."""
    flags.DEFINE_string("eval_dataset", None, "Evaluation images, any --dataset spec (a labelled folder, a .npz, ...); "
                        "must not share a file with the training images.")
    flags.DEFINE_float("val_fraction", None, "Fraction of the training images held out for evaluation (stratified, "
                       "from --seed, saved in workdir/splits and reused). Default: 0.1 when the data has no evaluation "
                       "split of its own (test split, val/ beside train/); 0: none.")
    flags.DEFINE_string("eval_split", None, "Evaluation split of builtin / TFDS data, or subfolder beside train/ "
                        "(val, validation, test); default: test, else validation or val.")


def define_report_flags():
    """The flags of the evaluation report (keras_mae.evaluation), the same in every app that writes one."""
    from keras_mae.evaluation import DEFAULT_THRESHOLDS

    flags.DEFINE_string("positive_class", None, "Binary tasks: the class to find (name or index), whose recall the "
                        "threshold table and --target_recall are about. Default: the second class.")
    flags.DEFINE_list("thresholds", [str(t) for t in DEFAULT_THRESHOLDS], "Binary tasks: the threshold table's rows.")
    flags.DEFINE_float("target_recall", 0.9, "Binary tasks: the report gives the highest threshold reaching this recall.")


def report_options(FLAGS, class_names):
    """`positive_class` (index), `thresholds` and `target_recall` for keras_mae.evaluation, checked."""
    try:
        thresholds = [float(t) for t in FLAGS.thresholds]
    except ValueError:
        raise UserError(f"--thresholds must be numbers in [0, 1]. Received: --thresholds={','.join(FLAGS.thresholds)}")
    if not thresholds or not all(0 <= t <= 1 for t in thresholds):
        raise UserError(f"--thresholds must be numbers in [0, 1]. Received: --thresholds={','.join(FLAGS.thresholds)}")
    if not 0 < FLAGS.target_recall <= 1:
        raise UserError(f"--target_recall must be in (0, 1]. Received: --target_recall={FLAGS.target_recall}")
    positive = None
    if FLAGS.positive_class is not None:
        names = list(class_names)
        if FLAGS.positive_class in names:
            positive = names.index(FLAGS.positive_class)
        elif FLAGS.positive_class.isdigit() and int(FLAGS.positive_class) < len(names):
            positive = int(FLAGS.positive_class)
        else:
            raise UserError(f"--positive_class={FLAGS.positive_class} is not a class; the classes are "
                            f"{', '.join(names)}.")
        if len(names) != 2:
            raise UserError(f"--positive_class applies to binary tasks; this one has {len(names)} classes.")
    return {"positive_class": positive, "thresholds": thresholds, "target_recall": FLAGS.target_recall}


def split_data(FLAGS, dataset, num_channels, workdir, saved=(), eval_dataset=None):
    """Chooses the training and evaluation images (see keras_mae.data.splits), saves the split, prints it."""
    from keras_mae import data

    split = data.split_dataset(
        dataset, eval_dataset if eval_dataset is not None else FLAGS.eval_dataset, FLAGS.val_fraction, FLAGS.seed,
        FLAGS.train_split, FLAGS.eval_split, FLAGS.data_dir, num_channels,
        saved=[workdir, *[s for s in saved if s]],
    )
    if chief():  # the others draw the same split (or read the saved one)
        data.save_split(split, workdir)
    print(f"Data:             {split.describe()}")
    return split


def define_model_flags():
    flags.DEFINE_string("preset", "mae_vit_tiny_patch4_28", f"Model preset: {', '.join(sorted(PRESETS))}.")
    for name, (define, help_text) in MODEL_FLAGS.items():
        define(name, None, help_text + " Defaults to the preset's.")


def model_config(FLAGS):
    """Preset config with the command line's overrides."""
    config = preset_config(FLAGS.preset)
    config.update({name: getattr(FLAGS, name) for name in MODEL_FLAGS if getattr(FLAGS, name) is not None})
    return config


class UserError(Exception):
    """A problem with the user's input: reported in one sentence, no traceback."""


_training = {"started": False}


def define_distribution_flag(help_text="Multi-device engine: data_parallel (jax), mirrored / multi_worker_mirrored "
                             "/ tpu (tensorflow), ddp (torch, under torchrun). --batch_size is the global batch."):
    flags.DEFINE_enum("distribution", "none", ["none", "data_parallel", "mirrored", "multi_worker_mirrored", "tpu",
                                               "ddp"], help_text)


def chief():
    """Whether this process writes the workdir: process 0 of a multi-process job (every app has one writer)."""
    from keras_mae.distribution import is_chief

    return is_chief()


def training_started():
    """Marks the end of set-up: from here on an exception is a bug and keeps its traceback."""
    _training["started"] = True


def keep_freed_tensors():
    """On the torch backend, glibc keeps freed tensors of up to 32 MiB for reuse (`keras_mae.utils.malloc_tuning`):
    Keras's out-of-place ops otherwise page-fault them back in every step (ViT-B/16 in bf16: 1.5x faster)."""
    import keras

    from keras_mae.utils.malloc_tuning import keep_freed_memory

    if keras.backend.backend() == "torch":
        keep_freed_memory()


def run_main(main_fn):
    """Runs `main_fn(argv)`, turning user errors raised before training into one line and exit code 2, a full disk
    into one line and exit code 1, and Ctrl-C outside training (or a second one during its checkpoint) into one
    line and exit code 130. `--help` lists the app's flags by group (`help_groups`)."""
    import help_groups
    from keras_mae.utils.disk_space import DiskFullError

    help_groups.install()

    def wrapped(argv):
        # Keras says this when a finite evaluation set of unknown length (a folder) ends, which is how every
        # evaluation ends; the training data of the apps are endless, so it never means lost training steps.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        if not chief():  # one report per job: process 0's (the others still print their errors)
            sys.stdout = open(os.devnull, "w")
        try:
            check_flag_files(sys.argv[1:])
            keep_freed_tensors()
            return main_fn(argv)
        except (UserError, ValueError, FileNotFoundError, PermissionError, NotADirectoryError) as error:
            if _training["started"] and not isinstance(error, UserError):
                raise
            print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
            sys.exit(2)
        except DiskFullError as error:
            print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print(f"{os.path.basename(sys.argv[0])}: interrupted; the checkpoints already written are complete "
                  "(rerun the same command to resume).", file=sys.stderr)
            sys.exit(130)

    return wrapped


def check_flag_files(args, seen=()):
    """Refuses a line of a --flagfile that absl would skip in silence: one that is not a flag nor a comment."""
    for arg in args:
        if not arg.startswith(("--flagfile=", "-flagfile=")):
            continue
        path = arg.split("=", 1)[1]
        if path in seen or not os.path.isfile(path):
            continue  # absl itself names a missing file
        with open(path) as f:
            lines = [line.strip() for line in f]
        for number, line in enumerate(lines, 1):
            if line and not line.startswith(("-", "#", "//")):
                raise UserError(f"{path}:{number}: {line!r} is not a flag; write it as --name=value "
                                "(or start the line with # to keep it as a comment).")
        check_flag_files(lines, (*seen, path))


def check_workdir(workdir, needed_bytes=0, needed_for="a checkpoint"):
    """Creates the workdir and takes its lock (one run per workdir), or says in one sentence why it cannot be used."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test.{os.getpid()}")  # one per process of a multi-process job
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise UserError(f"workdir {workdir!r} is not writable ({error.strerror}); pass a --workdir you can write to.")
    from keras_mae.utils.workdir_lock import WorkdirInUse, lock_workdir

    try:
        lock_workdir(workdir)  # one run per workdir, for the life of this process
    except WorkdirInUse as error:
        raise UserError(str(error)) from None
    free = shutil.disk_usage(workdir).free
    if free < needed_bytes:
        raise UserError(
            f"Only {free / 2**20:.0f} MiB free under workdir {workdir!r}, {needed_for} needs about "
            f"{needed_bytes / 2**20:.0f} MiB; free some disk or pass another --workdir."
        )


def flag_lines(FLAGS, names):
    """{name: flag-file line} of the named flags that have a value (`--name=value`, `--name`, `--noname`)."""
    lines = {}
    for name in names:
        value = getattr(FLAGS, name)
        if value is None:
            continue
        if isinstance(value, bool):
            lines[name] = f"--{name}" if value else f"--no{name}"
        elif isinstance(value, (list, tuple)):
            lines[name] = f"--{name}={','.join(str(v) for v in value)}"
        else:
            lines[name] = f"--{name}={value}"
    return lines


def read_flag_lines(FLAGS, path):
    """{name: line} of a flag file written by `write_flags` (the inverse of `flag_lines`)."""
    lines = {}
    with open(path) as f:
        for line in map(str.strip, f):
            if not line.startswith("--"):
                continue
            name = line[2:].split("=", 1)[0]
            if "=" not in line and name.startswith("no") and name not in FLAGS and name[2:] in FLAGS:
                name = name[2:]
            lines[name] = line
    return lines


def write_flags(FLAGS, path, names):
    """Writes the resolved flags as a flag file, so `--flagfile=path` replays the run."""
    with open(path, "w") as f:
        f.write("\n".join(flag_lines(FLAGS, names).values()) + "\n")
