"""What the apps share: model flags named as the constructor arguments, user-error handling, run records."""

import json
import os
import shutil
import sys

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


def training_started():
    """Marks the end of set-up: from here on an exception is a bug and keeps its traceback."""
    _training["started"] = True


def run_main(main_fn):
    """Runs `main_fn(argv)`, turning user errors raised before training into one line and exit code 2."""

    def wrapped(argv):
        try:
            return main_fn(argv)
        except (UserError, ValueError, FileNotFoundError, PermissionError, NotADirectoryError) as error:
            if _training["started"] and not isinstance(error, UserError):
                raise
            print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapped


def check_workdir(workdir, needed_bytes=0):
    """Creates the workdir, or says in one sentence why it cannot be used."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise UserError(f"workdir {workdir!r} is not writable ({error.strerror}); pass a --workdir you can write to.")
    free = shutil.disk_usage(workdir).free
    if free < needed_bytes:
        raise UserError(
            f"Only {free / 2**20:.0f} MiB free under workdir {workdir!r}, a checkpoint needs about "
            f"{needed_bytes / 2**20:.0f} MiB; free some disk or pass another --workdir."
        )


def write_flags(FLAGS, path, names):
    """Writes the resolved flags as a flag file, so `--flagfile=path` replays the run."""
    lines = []
    for name in names:
        value = getattr(FLAGS, name)
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"--{name}={','.join(str(v) for v in value)}")
        else:
            lines.append(f"--{name}={value}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def read_run(workdir):
    """The `run.json` a pretraining run wrote: model config and normalisation."""
    path = os.path.join(workdir, "run.json")
    if not os.path.isfile(path):
        raise UserError(f"No run.json in {workdir!r}; pass a workdir written by apps/pretrain.py.")
    with open(path) as f:
        return json.load(f)
