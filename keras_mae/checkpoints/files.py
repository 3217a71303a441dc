"""Checkpoint files in and out: `.pth`/`.pt`/`.bin` (PyTorch, weights only), `.safetensors`, `.npz`.

PyTorch files are read with `torch.load(weights_only=True)` only: a pickle
that would build anything but tensors and plain containers is refused before
any of it runs.

`save_official` also stores the model's constructor arguments (`model_config`),
which the weights' shapes do not tell (heads, LayerNorm epsilon, norm_pix_loss,
mask ratio, ...), under `CONFIG_KEY`: in the `.pth` dict beside `"model"`, as a
JSON string in the `.safetensors` metadata, in a `<path>.config.json` sidecar
for `.npz`. `read_weights` gives it back; files without it read as before.
"""

import argparse
import json
import os
import pickle
import re

import numpy as np

from keras_mae.checkpoints.official import as_numpy, export_official_weights, unwrap_state_dict

TORCH_EXTENSIONS = (".pth", ".pt", ".bin")
EXTENSIONS = TORCH_EXTENSIONS + (".safetensors", ".npz")
NO_TORCH = "Reading .pth needs PyTorch: pip install torch, or convert the file to .safetensors/.npz"
CONFIG_KEY = "keras_mae_config"


class CheckpointError(ValueError):
    """A checkpoint file keras_mae will not read, with the reason (a refused pickle, a missing dependency)."""


def _extension(path):
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(
            f"Unknown checkpoint extension {ext or '(none)'!r} in {os.fspath(path)!r}; "
            f"use one of {', '.join(EXTENSIONS)}."
        )
    return ext


def _torch_load(path):
    try:
        import torch
    except ImportError:
        raise ImportError(NO_TORCH) from None
    try:
        # argparse.Namespace: the `args` the official main_*.py store beside the weights; it only sets attributes.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch 2.x words it "Unsupported global: GLOBAL builtins.print ...", "Trying to load unsupported GLOBAL
        # posix.system whose module posix is blocked", or names it in its add_safe_globals([...]) advice.
        found = (re.search(r"(?i)unsupported global:?\s+(?:global\s+)?([^\s]+)", str(error))
                 or re.search(r"safe_globals\(\[([^\]]+)\]\)", str(error)))
        what = f" (it would call {found.group(1)})" if found else ""
        raise CheckpointError(
            f"Refusing to load {path!r}: it is a pickle holding more than tensors{what}, which could run code; "
            "only weights are read. If you trust it, re-save its state dict as .safetensors or .npz."
        ) from None


def _safetensors_load(path):
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (TypeError, ValueError):  # bfloat16 has no numpy dtype: go through torch when it is there
        try:
            from safetensors.torch import load_file as load_torch
        except ImportError:
            raise CheckpointError(
                f"{path!r} holds bfloat16 tensors; reading them needs PyTorch: pip install torch."
            ) from None
        return load_torch(path)


def read_state_dict(path):
    """A checkpoint file's state dict, as numpy arrays.

    Args:
        path: str or path-like. `.pth`/`.pt`/`.bin` (read with
            `torch.load(..., weights_only=True)`), `.safetensors` or `.npz`.
            `{"model": ...}`, `{"state_dict": ...}` and `{"model_state": ...}`
            wrappers and a DDP `module.` prefix are removed.

    Returns:
        dict from key to numpy array (bfloat16 becomes float32).
    """
    return read_weights(path)[0]


def read_weights(path):
    """A checkpoint file's state dict (as `read_state_dict`) and the model config stored with it.

    Returns:
        `(state_dict, config)`: config is the dict `save_official` stored
        (`image_size` a tuple), empty for a file without one.
    """
    path = os.fspath(path)
    ext = _extension(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file {path!r} does not exist; check the path.")
    try:
        state_dict, config = _read_file(path, ext)
    except (CheckpointError, ImportError):
        raise
    except Exception as error:  # each reader fails in its own words on a truncated or corrupt file
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else "no detail"
        raise CheckpointError(f"Cannot read checkpoint {path!r} ({type(error).__name__}: {reason}): the file is "
                              "truncated or corrupt; download or save it again.") from None
    state_dict = unwrap_state_dict(state_dict)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path!r} holds a {type(state_dict).__name__}, not a state dict of named tensors.")
    arrays = {str(key): as_numpy(value) for key, value in state_dict.items() if hasattr(value, "shape")}
    arrays = {key: a.astype("float32") if a.dtype.name == "bfloat16" else a for key, a in arrays.items()}
    return arrays, _parse_config(config, path)


def _read_file(path, ext):
    """`(raw state dict, stored config or None)` of one file."""
    if ext in TORCH_EXTENSIONS:
        data = _torch_load(path)
        return data, data.get(CONFIG_KEY) if isinstance(data, dict) else None
    if ext == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
        return _safetensors_load(path), metadata.get(CONFIG_KEY)
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    sidecar = config_sidecar(path)
    if not os.path.isfile(sidecar):
        return arrays, None
    with open(sidecar) as f:
        return arrays, f.read()


def config_sidecar(path):
    """Where the config of an `.npz` checkpoint lives: `<path>.config.json`."""
    return f"{os.fspath(path)}.config.json"


def _parse_config(config, path):
    """The stored config as a dict (JSON text is decoded), `{}` when there is none."""
    if config is None:
        return {}
    try:
        config = json.loads(config) if isinstance(config, str) else config
    except ValueError as error:
        raise CheckpointError(f"The {CONFIG_KEY} stored with {path!r} is not valid JSON ({error}); save the model "
                              "again, or delete it and pass the config to load_model.") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"The {CONFIG_KEY} stored with {path!r} is a {type(config).__name__}, not a dict; "
                              "save the model again.")
    if isinstance(config.get("image_size"), list):
        config = {**config, "image_size": tuple(config["image_size"])}
    return config


def model_config(model):
    """A model's constructor arguments as a JSON-ready dict: what `save_official` stores with the weights."""
    from keras_mae.models.init_arguments import init_arguments

    config = init_arguments(model)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}


def write_state_dict(state_dict, path, config=None):
    """Writes numpy arrays as `.pth` (`{"model": state_dict}` of torch tensors), `.safetensors` or `.npz`.

    Args:
        state_dict: dict from key to numpy array.
        path: str or path-like; the extension picks the format.
        config: JSON-ready dict or None. Stored under `CONFIG_KEY` (see the
            module docstring); an `.npz`'s old sidecar is removed when None.

    Returns:
        The path written.
    """
    path = os.fspath(path)
    ext = _extension(path)
    state_dict = {key: np.ascontiguousarray(value) for key, value in state_dict.items()}
    text = None if config is None else json.dumps(config, sort_keys=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext in TORCH_EXTENSIONS:
        _torch_save(state_dict, path, text)
    elif ext == ".safetensors":
        from safetensors.numpy import save_file

        metadata = {"format": "pt", **({CONFIG_KEY: text} if text else {})}  # "pt": transformers / timm read torch
        save_file(state_dict, path, metadata=metadata)
    else:
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to other names
            np.savez(f, **state_dict)
        _write_sidecar(config_sidecar(path), text)
    return path


def _torch_save(state_dict, path, text):
    try:
        import torch
    except ImportError:
        raise ImportError("Writing .pth needs PyTorch: pip install torch, or write .safetensors/.npz") from None
    data = {"model": {key: torch.from_numpy(value) for key, value in state_dict.items()}}
    torch.save(data if text is None else {**data, CONFIG_KEY: json.loads(text)}, path)  # plain types only


def _write_sidecar(sidecar, text):
    if text is not None:
        with open(sidecar, "w") as f:
            f.write(text + "\n")
    elif os.path.isfile(sidecar):  # a stale config would describe another model
        os.remove(sidecar)


def save_official(model, path):
    """Saves a keras_mae model's weights in the official facebookresearch/mae layout, with its config.

    PyTorch code loads the result strictly: `model.load_state_dict(torch.load(path)["model"])`
    for `.pth`, `safetensors.torch.load_file(path)` for `.safetensors`. The
    config (`model_config`) goes with it (see the module docstring), so
    `load_model(path)` rebuilds the same model with no arguments.

    Args:
        model: a `MaskedAutoencoder` (pretraining keys with decoder), a
            `ViTEncoder` (`mae_pretrain_vit_*` keys) or a `ViTClassifier`
            (`mae_finetuned_vit_*` keys).
        path: str or path-like ending in `.pth`/`.pt`, `.safetensors` or `.npz`.

    Returns:
        The path written.
    """
    return write_state_dict(export_official_weights(model), path, config=model_config(model))
