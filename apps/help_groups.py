"""`--help` for the apps: every flag the app defines (its own and the shared ones), grouped as model, data,
recipe and output, each with its default; absl's own flags stay under `--helpfull`."""

import os
import sys

from absl import app, flags

APPS = os.path.dirname(os.path.abspath(__file__))

# Each flag of the apps, by the group it is listed under; a flag missing here is listed under "other".
GROUPS = {
    "model": (
        "preset", "encoder", "model", "checkpoint", "image_size", "patch_size", "num_channels", "hidden_dim",
        "num_layers", "num_heads", "mlp_dim", "decoder_hidden_dim", "decoder_num_layers", "decoder_num_heads",
        "decoder_mlp_dim", "mask_ratio", "mask_strategy", "norm_pix_loss", "drop_path_rate", "pool", "global_pool",
        "head", "head_hidden_dims", "head_dropout", "compare_random_init",
    ),
    "data": (
        "dataset", "data_dir", "train_split", "eval_dataset", "eval_split", "val_fraction", "images", "mean", "std",
        "num_eval_images", "max_per_class", "cache_features", "features_batch_size", "features_dtype_policy",
    ),
    "recipe": (
        "epochs", "steps_per_epoch", "batch_size", "eval_batch_size", "accum_steps", "lr", "base_lr", "min_lr",
        "warmup_epochs", "weight_decay", "clip_grad", "layer_decay", "label_smoothing", "mlp_base_lr",
        "mlp_weight_decay", "rand_augment", "mixup_alpha", "cutmix_alpha", "switch_prob", "random_erasing_prob",
        "seed", "dtype_policy", "jit_compile", "distribution",
    ),
    "output": (
        "workdir", "output_dir", "output", "attention", "report", "positive_class", "thresholds", "target_recall",
        "eval_every", "knn_every", "reconstruction_every", "num_reconstructions", "checkpoint_every",
        "checkpoint_every_steps", "keep_checkpoints", "allow_flag_change", "verbose",
    ),
}
GROUP_OF = {name: group for group, names in GROUPS.items() for name in names}


def app_flags(flag_values=flags.FLAGS):
    """The flags the app defined, by name: its own and those of the modules of apps/ it imports (not absl's,
    TensorFlow's or this module's help flags)."""
    return {flag.name: flag for module, module_flags in flag_values.flags_by_module_dict().items()
            if _of_the_apps(module) for flag in module_flags}


def _of_the_apps(module):
    if module.endswith(".py"):  # the main module, by its path
        return module == sys.argv[0] or os.path.dirname(os.path.abspath(module)) == APPS
    return module != __name__ and os.path.isfile(os.path.join(APPS, module.split(".")[0] + ".py"))


def is_required(flag):
    return any("must have a value other than None" in getattr(v, "message", "") for v in flag.validators)


def render(flag_values=flags.FLAGS):
    """The grouped flag list, as absl renders one flag: `--name: help`, then `(default: ...)` or `(required)`."""
    by_group = {}
    for name, flag in sorted(app_flags(flag_values).items()):
        by_group.setdefault(GROUP_OF.get(name, "other"), []).append(flag)
    lines = []
    for group in (*GROUPS, "other"):
        if group not in by_group:
            continue
        lines.append(f"\n{group} flags:")
        for flag in by_group[group]:
            lines.append(flags.text_wrap(f"--{flag.name}: {flag.help}", indent="    ", firstline_indent="  "))
            if is_required(flag):
                lines.append("    (required)")
            elif flag.default_as_str:  # None defaults are not shown, as absl's help
                lines.append(flags.text_wrap(f"(default: {flag.default_as_str})", indent="    "))
    return "\n".join(lines)


class GroupedHelpFlag(app.HelpFlag):
    """`--help` / `-?`: the app's docstring and its flags by group."""

    def parse(self, arg):
        if self._parse(arg):
            doc = sys.modules["__main__"].__doc__ or f"\nUSAGE: {sys.argv[0]} [flags]\n"
            sys.stdout.write(f"{doc}\n{render()}\n\nTry --helpfull to get a list of all flags, absl's too.\n")
            sys.stdout.flush()
            sys.exit(0)


class GroupedHelpshortFlag(GroupedHelpFlag):
    NAME = "helpshort"
    SHORT_NAME = None


def install():
    """Replaces absl's `--help` / `--helpshort` (which list only the main module's own flags) by the grouped one."""
    app.define_help_flags()
    if isinstance(flags.FLAGS["help"], GroupedHelpFlag):
        return
    for name in ("help", "?", "helpshort"):
        delattr(flags.FLAGS, name)
    flags.DEFINE_flag(GroupedHelpFlag())
    flags.DEFINE_flag(GroupedHelpshortFlag())
