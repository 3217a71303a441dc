"""One entry point for weights from anywhere: official MAE, Hugging Face, timm, or our own `.keras`.

The model and its config are inferred from the weights' shapes; position
embeddings follow to any other image size (see `pos_embed.py`).
"""

import os

import numpy as np

from keras_mae.checkpoints import hf
from keras_mae.checkpoints.files import read_weights
from keras_mae.checkpoints.official import as_numpy, load_official_weights, unwrap_state_dict
from keras_mae.checkpoints.pos_embed import is_sincos, resize_pos_embed, source_grid

# Heads are not in the weights: the standard ViT head count of each width (ViT-Ti/S/B/L/H), 512: MAE's decoder.
STANDARD_NUM_HEADS = {192: 3, 384: 6, 512: 16, 768: 12, 1024: 16, 1280: 16}


def checkpoint_kind(state_dict):
    """ "mae" (with decoder), "classifier" (fine-tuned: `head.*` or `fc_norm.*`) or "encoder" (pretrained encoder)."""
    if "decoder_embed.weight" in state_dict:
        return "mae"
    if "head.weight" in state_dict or "fc_norm.weight" in state_dict:
        return "classifier"
    return "encoder"


def _count(state_dict, prefix):
    i = 0
    while f"{prefix}.{i}.norm1.weight" in state_dict:
        i += 1
    return i


def _mlp_dim(state_dict, prefix, num_layers, width):
    return int(np.shape(state_dict[f"{prefix}.0.mlp.fc1.weight"])[0]) if num_layers else 4 * width


def _heads(width, given, flag):
    if given is not None:
        return int(given)
    if width not in STANDARD_NUM_HEADS:
        raise ValueError(
            f"Cannot infer {flag} for width {width} (standard widths: {sorted(STANDARD_NUM_HEADS)}); "
            f"pass {flag}=... (the apps' --{flag} flag)."
        )
    return STANDARD_NUM_HEADS[width]


def infer_config(state_dict, num_heads=None, decoder_num_heads=None):
    """Constructor arguments of the model an official-layout state dict fits, from its shapes.

    Args:
        state_dict: dict from official / timm key to array.
        num_heads: int or None. Encoder heads; by width (192: 3, 384: 6, 768: 12,
            1024: 16, 1280: 16) when None.
        decoder_num_heads: int or None. Decoder heads; by width (512: 16, ...) when None.

    Returns:
        dict of `MaskedAutoencoder` / `ViTClassifier` / `ViTEncoder` arguments
        (per `checkpoint_kind`); `image_size` is None when the position table's
        grid cannot be told (a learned, non-square one).
    """
    if "patch_embed.proj.weight" not in state_dict or "pos_embed" not in state_dict:
        raise ValueError(
            "Not a ViT state dict: no 'patch_embed.proj.weight' / 'pos_embed'; expected the official MAE, "
            "timm or Hugging Face layout."
        )
    hidden_dim, num_channels, patch_h, patch_w = np.shape(state_dict["patch_embed.proj.weight"])
    if patch_h != patch_w:
        raise ValueError(f"Only square patches are supported. Received: a {patch_h}x{patch_w} patch_embed kernel.")
    num_layers = _count(state_dict, "blocks")
    grid = source_grid(state_dict["pos_embed"])
    config = dict(
        image_size=None if grid is None else (grid[0] * patch_h, grid[1] * patch_h),
        patch_size=int(patch_h),
        num_channels=int(num_channels),
        hidden_dim=int(hidden_dim),
        num_layers=num_layers,
        num_heads=_heads(int(hidden_dim), num_heads, "num_heads"),
        mlp_dim=_mlp_dim(state_dict, "blocks", num_layers, int(hidden_dim)),
    )
    kind = checkpoint_kind(state_dict)
    if kind == "mae":
        width = int(np.shape(state_dict["decoder_embed.weight"])[0])
        decoder_layers = _count(state_dict, "decoder_blocks")
        config.update(
            decoder_hidden_dim=width,
            decoder_num_layers=decoder_layers,
            decoder_num_heads=_heads(width, decoder_num_heads, "decoder_num_heads"),
            decoder_mlp_dim=_mlp_dim(state_dict, "decoder_blocks", decoder_layers, width),
        )
    elif kind == "classifier":
        config.update(
            num_classes=int(np.shape(state_dict["head.weight"])[0]) if "head.weight" in state_dict else 0,
            global_pool="fc_norm.weight" in state_dict,
        )
    return config


def fit_position_embeddings(state_dict, grid_size, old_grid_size=None):
    """The state dict with `pos_embed` / `decoder_pos_embed` resized to `grid_size` where they differ.

    Args:
        state_dict: official-layout dict of numpy arrays.
        grid_size: (grid_h, grid_w). The model's patch grid.
        old_grid_size: (grid_h, grid_w) or None. The checkpoint's; told from the tables when None.

    Returns:
        A new dict; the other arrays are shared.
    """
    out = dict(state_dict)
    grid_size = tuple(grid_size)
    for key in ("pos_embed", "decoder_pos_embed"):
        if key not in out:
            continue
        if np.shape(out[key])[-2] != 1 + grid_size[0] * grid_size[1]:
            out[key] = resize_pos_embed(out[key], grid_size, old_grid_size)
        elif not is_sincos(out[key], grid_size) and is_sincos(out[key], source_grid(out[key]) or grid_size):
            out[key] = resize_pos_embed(out[key], grid_size)  # same count, other sin-cos grid (2x3 -> 3x2)
        # Otherwise the same count is taken as the same grid: a learned table does not tell its own.
    return out


def model_grid(model):
    """The patch grid (grid_h, grid_w) of a MaskedAutoencoder, ViTClassifier or ViTEncoder."""
    return tuple(getattr(model, "encoder", model).grid_size)


def load_weights_into(model, path_or_state_dict, strict=True):
    """Loads official, Hugging Face or timm weights into a keras_mae model, at the model's image size.

    Args:
        model: a `MaskedAutoencoder`, `ViTClassifier` or `ViTEncoder`.
        path_or_state_dict: a checkpoint file (`.pth`, `.safetensors`, `.npz`),
            a HF directory, a HF / torch model, or a state dict.
        strict: bool. Missing and unexpected keys are an error naming them. Defaults to True.

    Returns:
        `(missing_keys, unexpected_keys)`.
    """
    state_dict, _ = read_checkpoint(path_or_state_dict)
    return load_official_weights(model, fit_position_embeddings(state_dict, model_grid(model)), strict=strict)


def read_checkpoint(source):
    """Official-layout weights and the constructor arguments a source states.

    Args:
        source: a checkpoint file, a HF directory, a HF / torch model, or a state dict.

    Returns:
        `(state_dict, kwargs)`: numpy arrays by official key, and a dict: a HF
        config's, or the one `save_official` stored in the file (empty when none).
    """
    config = {}
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            return hf.read_hf_directory(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint {path!r} does not exist; check the path.")
        source, config = read_weights(path)
    elif hasattr(source, "state_dict") and hasattr(source, "config"):  # a transformers model
        return hf.hf_to_official(source.state_dict()), hf.hf_config_to_kwargs(source.config)
    elif hasattr(source, "state_dict"):  # a torch module in the official / timm layout
        source = source.state_dict()
    if not isinstance(source, dict):
        raise TypeError(f"Expected a checkpoint path, a model or a state dict; received {type(source).__name__}.")
    state_dict = {str(key): as_numpy(value) for key, value in unwrap_state_dict(source).items()}
    return (hf.hf_to_official(state_dict) if hf.is_hf_state_dict(state_dict) else state_dict), config
