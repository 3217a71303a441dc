"""Weights in the official facebookresearch/mae layout (PyTorch state-dict keys and layouts)."""

import os

import keras
import numpy as np

BLOCK_PARTS = {
    "norm1": "norm1",
    "attn.qkv": "qkv",
    "attn.proj": "proj",
    "norm2": "norm2",
    "mlp.fc1": "fc1",
    "mlp.fc2": "fc2",
}


def _dense_or_norm(prefix, layer):
    """Keys of a Dense or LayerNormalization layer: `{prefix}.weight` and `{prefix}.bias`."""
    if hasattr(layer, "kernel"):
        return {f"{prefix}.weight": layer.kernel, f"{prefix}.bias": layer.bias}
    return {f"{prefix}.weight": layer.gamma, f"{prefix}.bias": layer.beta}


def _blocks(prefix, blocks):
    variables = {}
    for i, block in enumerate(blocks):
        for key, attr in BLOCK_PARTS.items():
            variables.update(_dense_or_norm(f"{prefix}.{i}.{key}", getattr(block, attr)))
    return variables


def encoder_variables(encoder):
    """Official key -> keras variable for a ViTEncoder."""
    variables = {
        "cls_token": encoder.cls_token,
        "pos_embed": encoder.pos_embed,
        "patch_embed.proj.weight": encoder.patch_embed.projection.kernel,
        "patch_embed.proj.bias": encoder.patch_embed.projection.bias,
    }
    variables.update(_blocks("blocks", encoder.blocks))
    variables.update(_dense_or_norm("norm", encoder.norm))
    return variables


def decoder_variables(decoder):
    """Official key -> keras variable for an MAEDecoder."""
    variables = {"mask_token": decoder.mask_token, "decoder_pos_embed": decoder.decoder_pos_embed}
    variables.update(_dense_or_norm("decoder_embed", decoder.decoder_embed))
    variables.update(_blocks("decoder_blocks", decoder.decoder_blocks))
    variables.update(_dense_or_norm("decoder_norm", decoder.decoder_norm))
    variables.update(_dense_or_norm("decoder_pred", decoder.decoder_pred))
    return variables


def classifier_variables(model):
    """Official fine-tuned keys (`models_vit.py`) -> keras variable for a ViTClassifier.

    With global pooling there is no `norm.*` (the official model deletes it) but `fc_norm.*`.
    """
    variables = encoder_variables(model.encoder)
    if model.global_pool:
        del variables["norm.weight"], variables["norm.bias"]
        variables.update(_dense_or_norm("fc_norm", model.fc_norm))
    if model.head is not None:
        variables.update(_dense_or_norm("head", model.head))
    return variables


def official_variables(model):
    """Official key -> keras variable for a MaskedAutoencoder, a ViTClassifier or a ViTEncoder."""
    if hasattr(model, "decoder"):
        return {**encoder_variables(model.encoder), **decoder_variables(model.decoder)}
    if hasattr(model, "encoder") and hasattr(model, "global_pool"):
        return classifier_variables(model)
    if hasattr(model, "patch_embed"):
        return encoder_variables(model)
    raise ValueError(
        f"Expected a MaskedAutoencoder, a ViTClassifier or a ViTEncoder; received {type(model).__name__}."
    )


# A keras weight's axes in PyTorch's order: Linear (out, in) -> (in, out); Conv2d (out, in, p, p) -> (p, p, in, out).
KERAS_AXES = {2: (1, 0), 4: (2, 3, 1, 0)}


def to_keras_layout(array):
    """PyTorch layout -> keras (`KERAS_AXES`); other ranks unchanged."""
    axes = KERAS_AXES.get(array.ndim)
    return array if axes is None else array.transpose(axes)


def to_torch_layout(array):
    """Inverse of `to_keras_layout`."""
    axes = KERAS_AXES.get(array.ndim)
    return array if axes is None else array.transpose(np.argsort(axes))


def as_numpy(value):
    """A numpy array from a numpy array, a torch tensor or a backend tensor."""
    if hasattr(value, "detach"):  # torch, without importing it
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
    return np.asarray(value)


def unwrap_state_dict(state_dict):
    """The state dict inside a checkpoint's `{"model": ...}` (or `state_dict`, `model_state`) wrapper.

    A `module.` prefix on every key (saved from DistributedDataParallel) is removed too.
    """
    for wrapper in ("model", "state_dict", "model_state"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    if isinstance(state_dict, dict) and state_dict and all(str(k).startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def _names(keys, limit=10):
    """The first `limit` keys, and how many more: errors stay readable for a ViT-H's 500 keys."""
    shown = ", ".join(repr(key) for key in keys[:limit])
    return f"[{shown}{f', ... and {len(keys) - limit} more' if len(keys) > limit else ''}]"


def load_official_weights(model, state_dict, strict=True):
    """Loads official-layout weights (numpy arrays or torch tensors) into a model.

    Args:
        model: a `MaskedAutoencoder` (encoder and decoder keys), a
            `ViTClassifier` (fine-tuned keys) or a `ViTEncoder` (encoder keys only).
        state_dict: dict from official key (`cls_token`, `blocks.0.attn.qkv.weight`,
            ...) to arrays in PyTorch's layout; a `{"model": state_dict}`
            wrapper is unwrapped.
        strict: bool. Missing and unexpected keys are an error naming them;
            when False they are skipped and returned. Defaults to True.

    Returns:
        `(missing_keys, unexpected_keys)`, sorted lists.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        raise TypeError(f"load_official_weights takes a state dict, not a path ({os.fspath(state_dict)!r}); load "
                        "a file with keras_mae.checkpoints.load_weights_into(model, path).")
    state_dict = unwrap_state_dict(state_dict)
    variables = official_variables(model)
    missing = sorted(set(variables) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(variables))
    if strict and (missing or unexpected):
        raise ValueError(
            f"State dict does not match {type(model).__name__}: missing keys {_names(missing)}, unexpected keys "
            f"{_names(unexpected)}; check the model config, or pass strict=False to load the keys that match."
        )
    for key, variable in variables.items():
        if key not in state_dict:
            continue
        array = to_keras_layout(as_numpy(state_dict[key]))
        if tuple(array.shape) != tuple(variable.shape):
            raise ValueError(
                f"Shape mismatch for {key!r}: checkpoint {tuple(array.shape)} (keras layout) vs model "
                f"{tuple(variable.shape)}; build the model with the checkpoint's config."
            )
        variable.assign(array.astype(variable.dtype))
    return missing, unexpected


def export_official_weights(model):
    """A model's weights as an official-layout state dict of float32 numpy arrays."""
    return {
        key: np.ascontiguousarray(to_torch_layout(keras.ops.convert_to_numpy(variable)).astype("float32"))
        for key, variable in official_variables(model).items()
    }
