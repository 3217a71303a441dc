"""keras-hub style presets: `from_preset` and `save_to_preset` of `MaskedAutoencoder`, `ViTEncoder`, `ViTClassifier`.

A preset folder is laid out as keras-hub's `save_to_preset` writes one:

    preset/
      config.json          the model's Keras serialization: {"module", "class_name", "config", "registered_name"}
      model.weights.h5     its weights (`model.save_weights`)
      metadata.json        keras_version, keras_mae_version, parameter_count, date_saved

`from_preset` takes a built-in name (`keras_mae.models.presets`, random weights), such a folder, a `.keras`
file, a pretraining workdir (its final `model.keras`, else its newest complete checkpoint: `keras_mae.runs`),
an official / timm / Hugging Face checkpoint (`keras_mae.checkpoints.load_model`), or, with keras-hub
installed, a hub handle (`hf://owner/name`, `kaggle://...`) that keras-hub's own file loader fetches.
"""

import datetime
import json
import os
import re

from keras_mae.models.image_size import image_shape
from keras_mae.models.presets import PRESETS, encoder_config, preset_config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)

# Arguments that fix the weights' shapes or what they compute: a saved preset's values stand. `image_size` is
# not among them: the position tables are recomputed (sin-cos) or resized, as `checkpoints.load_model` does.
ENCODER_ARCHITECTURE = ("patch_size", "num_channels", "hidden_dim", "num_layers", "num_heads", "mlp_dim")
DECODER_ARCHITECTURE = ("decoder_hidden_dim", "decoder_num_layers", "decoder_num_heads", "decoder_mlp_dim",
                        "encode_mask_tokens")

EXPECTED = (f"a preset folder holds {CONFIG_FILE} (a serialized keras_mae model) and {WEIGHTS_FILE}, as "
            "`model.save_to_preset(folder)` writes them; a pretraining workdir holds run.json")


def _classes():
    from keras_mae.models.masked_autoencoder import MaskedAutoencoder
    from keras_mae.models.vit_classifier import ViTClassifier
    from keras_mae.models.vit_encoder import ViTEncoder

    return MaskedAutoencoder, ViTEncoder, ViTClassifier


def _unknown(name):
    return ValueError(
        f"Unknown preset {name!r}: neither a built-in preset ({', '.join(sorted(PRESETS))}) nor an existing path; "
        "a preset folder (from save_to_preset), a .keras file, a pretraining workdir or, with keras-hub, an "
        "hf:// or kaggle:// handle also works."
    )


# --- Loading -------------------------------------------------------------------------------------------------


def from_preset(cls, name, **overrides):
    """`cls.from_preset(name, **overrides)`: see the module docstring and the classes' `from_preset`."""
    MaskedAutoencoder, _, _ = _classes()
    if isinstance(name, str) and name in PRESETS:  # built-in: random weights, any override
        config = preset_config(name) if issubclass(cls, MaskedAutoencoder) else encoder_config(name)
        return cls(**{**config, **overrides})
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(f"A preset is a name, a path or a hub handle (a str). Received: {name!r}")
    name = os.fspath(name)
    if "://" in name:
        get_file = _hub_get_file(name)
        config_path = get_file(name, CONFIG_FILE)
        _preset_class(_read_json(config_path), name)  # a keras_mae preset, before fetching its weights
        source = _read_preset(config_path, get_file(name, WEIGHTS_FILE), where=name)
    else:
        path = os.path.expanduser(name)
        if not os.path.exists(path):
            raise _unknown(name)
        source = _read_local(path)
    return _convert(source, cls, dict(overrides), name)


def _read_local(path):
    """The model (weights loaded) a local preset folder, `.keras` file, workdir or checkpoint holds."""
    from keras_mae import runs
    from keras_mae.checkpoints import load_model

    if os.path.isdir(path) and not runs.is_workdir(path):
        config_path = os.path.join(path, CONFIG_FILE)
        if os.path.isfile(config_path):
            if "model_type" in _read_json(config_path):  # a Hugging Face ViTMAE directory
                return load_model(path)
            return _read_preset(config_path, os.path.join(path, WEIGHTS_FILE), where=path)
        if not os.path.isfile(os.path.join(path, runs.MODEL_FILE)):
            raise ValueError(f"{path!r} is not a preset: {EXPECTED} (or a {runs.MODEL_FILE}).")
    if path.endswith(".weights.h5"):
        raise ValueError(f"{path!r} holds weights only, no config: pass the preset folder or .keras file it "
                         f"belongs to, or build the model and call load_weights. ({EXPECTED}.)")
    return load_model(path)  # .keras files, workdirs, official / timm / HF checkpoints


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as error:
        raise ValueError(f"{path!r} is not valid JSON ({error}); {EXPECTED}.") from None


def _preset_class(config, where):
    """The keras_mae class a preset's config.json describes; a clear error for anything else."""
    import keras

    cls = keras.saving.get_registered_object(config.get("registered_name")) if isinstance(config, dict) else None
    if not (isinstance(cls, type) and issubclass(cls, _classes())):
        found = (config.get("class_name") or config.get("model_type")) if isinstance(config, dict) else None
        raise ValueError(f"{CONFIG_FILE} of {where!r} describes {found or 'no Keras model'}, not a keras_mae model "
                         f"(MaskedAutoencoder, ViTEncoder or ViTClassifier); {EXPECTED}.")
    return cls


def _read_preset(config_path, weights_path, where):
    """The model of a preset's config.json, with the weights of its model.weights.h5."""
    import keras

    config = _read_json(config_path)
    _preset_class(config, where)
    if not os.path.isfile(weights_path):
        raise ValueError(f"{where!r} has a {CONFIG_FILE} but no {WEIGHTS_FILE}; {EXPECTED}.")
    model = keras.saving.deserialize_keras_object(config)
    model.load_weights(weights_path)
    return model


def _hub_get_file(handle):
    """keras-hub's own preset file loader (`get_file(handle, file)`: a local path), or a one-line error."""
    try:
        import keras_hub  # noqa: F401  (first: a submodule already imported would hide a missing package)
        from keras_hub.src.utils.preset_utils import get_file
    except ImportError as error:
        raise ImportError(
            f"Loading the hub handle {handle!r} needs keras-hub: pip install 'keras_mae[hub]' (or pip install "
            f"keras-hub); or pass a local preset folder. ({error})"
        ) from None
    return get_file


def _convert(source, cls, overrides, where):
    """`source` (a loaded keras_mae model) as a `cls`, the allowed `overrides` applied, its weights kept."""
    from keras_mae.checkpoints.auto import _with_overrides

    MaskedAutoencoder, ViTEncoder, ViTClassifier = _classes()
    image_size = overrides.pop("image_size", None)
    if isinstance(source, cls):
        fixed = ENCODER_ARCHITECTURE + (DECODER_ARCHITECTURE if isinstance(source, MaskedAutoencoder) else ())
        if isinstance(source, ViTClassifier):
            fixed += ("global_pool",)
            if overrides.get("num_classes", source.num_classes) != source.num_classes:
                return _classifier(source, overrides, image_size, where)  # a new head on the saved encoder
        _check_architecture(source, overrides, fixed, where)
        return _with_overrides(source, image_size, overrides)
    encoder = source if isinstance(source, ViTEncoder) else getattr(source, "encoder", None)
    if cls is MaskedAutoencoder or not isinstance(encoder, ViTEncoder):
        raise ValueError(f"{where!r} holds a {type(source).__name__}, which cannot load as a {cls.__name__}"
                         + (" (it has no decoder); load it with ViTEncoder.from_preset or ViTClassifier.from_preset."
                            if isinstance(encoder, ViTEncoder) else "."))
    _check_architecture(encoder, overrides, ENCODER_ARCHITECTURE, where)
    if issubclass(cls, ViTClassifier):  # a classifier on a pretrained encoder, its head and fc_norm new
        return _classifier(encoder, overrides, image_size, where, cls)
    return _with_overrides(encoder, image_size, overrides)  # encoder of an MAE or a classifier


def _classifier(source, overrides, image_size, where, cls=None):
    """A new `cls` (ViTClassifier) whose encoder (and fc_norm, from a classifier) carries `source`'s weights."""
    from keras_mae.checkpoints.auto import _check_overrides
    from keras_mae.models.init_arguments import init_arguments
    from keras_mae.utils.copy_weights import copy_weights

    _, ViTEncoder, ViTClassifier = _classes()
    cls = cls or type(source)
    _check_overrides(cls, overrides)
    if not isinstance(source, ViTEncoder):
        _check_architecture(source, overrides, ENCODER_ARCHITECTURE + ("global_pool",), where)
    config = {**init_arguments(source), **overrides}
    if image_size is not None:
        config["image_size"] = image_shape(image_size)
    model = cls(**config)
    encoder = source if isinstance(source, ViTEncoder) else source.encoder
    left = copy_weights(encoder, model.encoder)
    if getattr(source, "fc_norm", None) is not None and model.fc_norm is not None:
        copy_weights(source.fc_norm, model.fc_norm)
    if left:
        raise ValueError(f"The encoder of {where!r} left weights of the {cls.__name__} without a value: "
                         f"{', '.join(left)}.")
    return model


def _check_architecture(source, overrides, keys, where):
    """A one-line error for an override of an argument the saved weights fix (same value: allowed)."""
    from keras_mae.models.init_arguments import init_arguments

    saved = init_arguments(source)
    for key in keys:
        if key in overrides and key in saved and overrides[key] != saved[key]:
            raise ValueError(
                f"{key}={overrides[key]!r} would change the architecture of {where!r} (saved with "
                f"{key}={saved[key]!r}) so its weights could not load; drop {key}=, or for a new randomly "
                f"initialised model of that shape use from_preset(<built-in name>, {key}=...) or the constructor."
            )


# --- Saving --------------------------------------------------------------------------------------------------


def save_to_preset(model, preset_dir):
    """Writes `model` as a keras-hub style preset folder (config.json, model.weights.h5, metadata.json).

    The folder is created if needed; one holding files other than a preset's is refused, so nothing else is
    ever overwritten (an earlier preset there is replaced). Each file is written then renamed; config.json,
    what marks a complete preset, is written last.
    """
    import keras

    from keras_mae import __version__
    from keras_mae.utils.atomic import TEMPORARY_PREFIX, atomic_path, write_json_atomic
    from keras_mae.utils.disk_space import require_free_space

    preset_dir = os.path.expanduser(os.fspath(preset_dir))
    if os.path.exists(preset_dir) and not os.path.isdir(preset_dir):
        raise ValueError(f"{preset_dir!r} is a file; save_to_preset writes a folder: pass a new or empty folder.")
    present = os.listdir(preset_dir) if os.path.isdir(preset_dir) else []
    others = sorted(f for f in present if f not in PRESET_FILES and not f.startswith(TEMPORARY_PREFIX))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ValueError(
            f"{preset_dir!r} holds files that are not a preset's ({shown}); save_to_preset writes "
            f"{', '.join(PRESET_FILES)} only into a new or empty folder or over an earlier preset, so that nothing "
            "else is overwritten: pick another folder."
        )
    os.makedirs(preset_dir, exist_ok=True)
    config_path = os.path.join(preset_dir, CONFIG_FILE)
    if os.path.exists(config_path):
        os.remove(config_path)  # an earlier preset: no longer one until the new config is in place
    config = keras.saving.serialize_keras_object(model)
    _drop_keys(config, ("compile_config", "build_config"))  # as keras-hub: the architecture only
    weights_path = os.path.join(preset_dir, WEIGHTS_FILE)
    require_free_space(weights_path, sum(_nbytes(w) + 2048 for w in model.weights))  # HDF5 fails badly on a full disk
    with atomic_path(weights_path) as tmp:
        model.save_weights(tmp)
    write_json_atomic(os.path.join(preset_dir, METADATA_FILE), {
        "keras_version": keras.version(), "keras_mae_version": __version__, "class_name": type(model).__name__,
        "parameter_count": int(model.count_params()),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    })
    write_json_atomic(config_path, config)


def _nbytes(weight):
    import numpy as np

    return int(np.prod(weight.shape, dtype=np.int64)) * np.dtype(weight.dtype).itemsize


def _drop_keys(config, keys):
    for key in keys:
        config.pop(key, None)
    for value in config.values():
        if isinstance(value, dict):
            _drop_keys(value, keys)


# --- Built-in presets: names and sizes, by arithmetic (nothing is built) -----------------------------------------


def _block_params(width, mlp_dim):
    """A pre-norm transformer block: two LayerNorms, qkv, proj, fc1, fc2."""
    return 4 * width + 4 * width * width + 4 * width + 2 * width * mlp_dim + mlp_dim + width


# The constructors' defaults the built-in configs leave out (the tests check the counts against built models).
DEFAULTS = {
    "MaskedAutoencoder": dict(num_channels=3, encode_mask_tokens=False),
    "ViTEncoder": dict(num_channels=3),
    "ViTClassifier": dict(num_channels=3, num_classes=1000, global_pool=True),
}


def parameter_count(cls_name, config):
    """`count_params()` of `cls_name(**config)` ("MaskedAutoencoder", "ViTEncoder" or "ViTClassifier"), by
    arithmetic from the config: nothing is built.

    >>> parameter_count("ViTEncoder", dict(image_size=8, patch_size=4, num_channels=1, hidden_dim=16,
    ...                                    num_layers=1, num_heads=2, mlp_dim=32))
    2624
    """
    c = {**DEFAULTS[cls_name], **config}
    height, width = image_shape(c["image_size"])
    patch, dim = int(c["patch_size"]), int(c["hidden_dim"])
    positions = 1 + (height // patch) * (width // patch)
    patch_dim = patch * patch * int(c["num_channels"])
    count = patch_dim * dim + dim + dim + positions * dim  # patch_embed, cls_token, pos_embed
    count += int(c["num_layers"]) * _block_params(dim, int(c["mlp_dim"])) + 2 * dim  # blocks, norm
    if cls_name == "MaskedAutoencoder":
        dec = int(c["decoder_hidden_dim"])
        count += dim if c["encode_mask_tokens"] else 0
        count += dim * dec + dec + int(c["decoder_num_layers"]) * _block_params(dec, int(c["decoder_mlp_dim"]))
        count += 2 * dec + dec * patch_dim + patch_dim + dec + positions * dec  # norm, pred, mask_token, pos
    elif cls_name == "ViTClassifier":
        count += 2 * dim if c["global_pool"] else 0
        count += dim * int(c["num_classes"]) + int(c["num_classes"])
    return count


_NAME = re.compile(r"mae_vit_([a-z]+)_patch(\d+)")


def builtin_presets(cls_name):
    """The `presets` attribute of `cls_name`: {name: {description, params, image_size, patch_size, num_channels}}."""
    table = {}
    for name in PRESETS:
        config = preset_config(name) if cls_name == "MaskedAutoencoder" else encoder_config(name)
        size = _NAME.match(name)
        vit = f"ViT-{size.group(1).capitalize()}/{size.group(2)}" if size else "ViT"
        height, width = image_shape(config["image_size"])
        channels = {1: "grayscale", 3: "RGB"}.get(config["num_channels"], f"{config['num_channels']}-channel")
        encoder = f"{vit} encoder ({config['num_layers']} blocks, width {config['hidden_dim']})"
        images = f"{height}x{width} {channels} images"
        description = {
            "MaskedAutoencoder": f"MAE: {encoder} and a decoder of {config.get('decoder_num_layers')} blocks, "
                                 f"width {config.get('decoder_hidden_dim')}, for {images}",
            "ViTEncoder": f"{encoder} for {images}, as the MaskedAutoencoder preset's",
            "ViTClassifier": f"{encoder} + linear head (1000 classes unless num_classes=) for {images}",
        }[cls_name]
        table[name] = {
            "description": description + "; random initialisation.",
            "params": parameter_count(cls_name, config),
            "image_size": (height, width), "patch_size": config["patch_size"], "num_channels": config["num_channels"],
        }
    return table
