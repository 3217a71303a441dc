"""`load_model`: the right keras_mae model, weights loaded, from any checkpoint."""

import inspect
import os

from keras_mae.checkpoints.loading import (
    checkpoint_kind, fit_position_embeddings, infer_config, model_grid, read_checkpoint,
)
from keras_mae.checkpoints.official import load_official_weights
from keras_mae.models.image_size import grid_shape, image_shape
from keras_mae.utils.copy_weights import copy_weights


def _model_class(kind):
    from keras_mae.models import MaskedAutoencoder, ViTClassifier, ViTEncoder

    return {"mae": MaskedAutoencoder, "classifier": ViTClassifier, "encoder": ViTEncoder}[kind]


def _check_overrides(cls, overrides):
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    for name, value in overrides.items():
        if name not in accepted:
            raise ValueError(
                f"{name}={value!r} does not apply to this checkpoint's model, a {cls.__name__}; "
                f"its arguments are {', '.join(sorted(accepted))}."
            )


def _load_ours(path):
    """A `.keras` file, or the model of a pretraining workdir (final export, else newest checkpoint); else None."""
    import keras

    from keras_mae import runs

    if runs.is_workdir(path):
        return runs.load_pretrained(path)[0]
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, runs.MODEL_FILE)):  # a folder holding one
        path = os.path.join(path, runs.MODEL_FILE)
    if not path.endswith(".keras"):
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file {path!r} does not exist; check the path.")
    return keras.saving.load_model(path, compile=False)


def _with_overrides(model, image_size, overrides):
    """`model`, rebuilt with new arguments (weights carried over) when they differ."""
    config = model.get_config()
    if image_size is not None:
        overrides["image_size"] = image_shape(image_size)
    _check_overrides(type(model), overrides)
    changes = {k: v for k, v in overrides.items() if k not in config or config[k] != v}
    if not changes:
        return model
    rebuilt = type(model).from_config({**config, **changes})
    left = copy_weights(model, rebuilt)
    if left:
        raise ValueError(f"Rebuilding {model.name} with {changes} left weights without a value: {', '.join(left)}.")
    return rebuilt


def load_model(path_or_state_dict, image_size=None, **overrides):
    """The keras_mae model a checkpoint holds, with its weights, optionally at another image size.

    Official facebookresearch/mae files (`mae_pretrain_vit_*.pth` -> `ViTEncoder`,
    `mae_visualize_vit_*.pth` and `*_full.pth` -> `MaskedAutoencoder`,
    `mae_finetuned_vit_*.pth` -> `ViTClassifier`), timm ViT state dicts,
    Hugging Face ViTMAE directories or models, files from `save_official`, and
    our own `.keras` files and pretraining workdirs (`keras_mae.runs`: the final
    model, else the newest complete checkpoint of a run still going).
    The config comes from the one `save_official` / `save_hf` stored with the
    weights, a HF config, or the `.keras` file; else from the weights' shapes
    (heads from the width, see `infer_config`).

    Args:
        path_or_state_dict: a path (`.pth`/`.pt`/`.bin`, `.safetensors`,
            `.npz`, `.keras`, a HF directory or a workdir), a HF / torch model,
            or a state dict.
        image_size: int, (height, width) or None. Build at this size: learned
            position embeddings are resized bicubically as the official
            `interpolate_pos_embed`, sin-cos ones recomputed. Defaults to the
            checkpoint's size.
        **overrides: constructor arguments to set or override, e.g.
            `num_heads=` for a non-standard width, `norm_pix_loss=True` for a
            checkpoint trained with it, `mask_ratio=`, `drop_path_rate=`.
            None values are ignored.

    Returns:
        A `MaskedAutoencoder`, `ViTClassifier` or `ViTEncoder` with the weights loaded.

    >>> import keras_mae
    >>> mae = keras_mae.MaskedAutoencoder.from_preset("mae_vit_tiny_patch4_28", num_layers=1, decoder_num_layers=1)
    >>> weights = keras_mae.checkpoints.export_official_weights(mae)
    >>> load_model(weights, image_size=32, decoder_num_heads=4).encoder.grid_size
    (8, 8)
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        ours = _load_ours(os.fspath(path_or_state_dict))
        if ours is not None:
            return _with_overrides(ours, image_size, overrides)
    state_dict, known = read_checkpoint(path_or_state_dict)
    cls = _model_class(checkpoint_kind(state_dict))
    heads = {key: overrides.get(key, known.get(key)) for key in ("num_heads", "decoder_num_heads")}
    inferred = {**infer_config(state_dict, **heads), **known}
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = {key: value for key, value in inferred.items() if key in accepted}
    _check_overrides(cls, overrides)
    config.update(overrides)
    old_grid = None if config["image_size"] is None else grid_shape(config["image_size"], config["patch_size"])
    config["image_size"] = image_size if image_size is not None else config["image_size"]
    if config["image_size"] is None:
        length = state_dict["pos_embed"].shape[-2] - 1
        raise ValueError(
            f"Cannot tell the image size of a checkpoint with {length} learned, non-square positions; "
            "pass image_size=(height, width)."
        )
    model = cls(**config)
    weights = fit_position_embeddings(state_dict, model_grid(model), old_grid)
    load_official_weights(model, weights, strict=True)
    return model
