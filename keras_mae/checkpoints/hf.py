"""Hugging Face `ViTMAEForPreTraining` / `ViTMAEModel` / `ViTForImageClassification` weights, in the official layout.

HF splits the fused qkv into query / key / value and renames every module.
Both naming schemes are read: transformers >= 5 in memory (`vit.layers.{i}
.attention.q_proj`, `mlp.fc1`) and the files of transformers 4.x and 5.x
(`vit.encoder.layer.{i}.attention.attention.query`, `intermediate.dense`;
5.x saves decoder blocks as `decoder.decoder_encoder.layer.{i}`).
"""

import glob
import json
import os

import numpy as np

from keras_mae.checkpoints.official import as_numpy

BLOCK_NAMES = {  # our part -> (transformers 5.x name, 4.x name)
    "q": ("attention.q_proj", "attention.attention.query"),
    "k": ("attention.k_proj", "attention.attention.key"),
    "v": ("attention.v_proj", "attention.attention.value"),
    "attn.proj": ("attention.o_proj", "attention.output.dense"),
    "mlp.fc1": ("mlp.fc1", "intermediate.dense"),
    "mlp.fc2": ("mlp.fc2", "output.dense"),
    "norm1": ("layernorm_before", "layernorm_before"),
    "norm2": ("layernorm_after", "layernorm_after"),
}
ENCODER_BLOCKS = ("vit.layers", "vit.encoder.layer", "layers", "encoder.layer")
DECODER_BLOCKS = ("decoder.decoder_layers", "decoder.decoder_encoder.layer")


def is_hf_state_dict(state_dict):
    """Whether the keys are Hugging Face ViTMAE's (`vit.embeddings.cls_token` or `embeddings.cls_token`)."""
    return "vit.embeddings.cls_token" in state_dict or "embeddings.cls_token" in state_dict


def _part(sd, src, names, kind, width):
    for name in names:
        if f"{src}.{name}.{kind}" in sd:
            return sd[f"{src}.{name}.{kind}"]
    if kind == "bias":  # qkv_bias=False
        return np.zeros((width,), "float32")
    raise ValueError(f"Hugging Face checkpoint has no {src}.{names[0]}.{kind}; it is not a ViTMAE checkpoint.")


def _blocks(sd, prefixes, out_prefix, out):
    prefix = next((p for p in prefixes if f"{p}.0.layernorm_before.weight" in sd), None)
    i = 0
    while prefix is not None and f"{prefix}.{i}.layernorm_before.weight" in sd:
        src, dst = f"{prefix}.{i}", f"{out_prefix}.{i}"
        width = sd[f"{src}.layernorm_before.weight"].shape[0]
        for kind in ("weight", "bias"):
            parts = {part: _part(sd, src, names, kind, width) for part, names in BLOCK_NAMES.items()}
            out[f"{dst}.attn.qkv.{kind}"] = np.concatenate([parts.pop(n) for n in ("q", "k", "v")], axis=0)
            out.update({f"{dst}.{part}.{kind}": value for part, value in parts.items()})
        i += 1


def hf_to_official(state_dict):
    """Official facebookresearch/mae state dict from a Hugging Face ViTMAE state dict.

    Args:
        state_dict: dict from HF key to array or torch tensor, of a
            `ViTMAEForPreTraining` (encoder + decoder) or a `ViTMAEModel`
            (encoder only), transformers 4.x or 5.x names.

    Returns:
        dict from official key to numpy array (PyTorch layout).
    """
    sd = {key: as_numpy(value) for key, value in state_dict.items()}
    vit = "vit." if "vit.embeddings.cls_token" in sd else ""
    if f"{vit}embeddings.cls_token" not in sd:
        raise ValueError(
            "Not a Hugging Face ViTMAE state dict: no 'vit.embeddings.cls_token' or 'embeddings.cls_token'."
        )
    out = {
        "cls_token": sd[f"{vit}embeddings.cls_token"],
        "pos_embed": sd[f"{vit}embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd[f"{vit}embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd[f"{vit}embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd[f"{vit}layernorm.weight"],
        "norm.bias": sd[f"{vit}layernorm.bias"],
    }
    _blocks(sd, ENCODER_BLOCKS, "blocks", out)
    if "decoder.mask_token" in sd:
        out["mask_token"] = sd["decoder.mask_token"]
        out["decoder_pos_embed"] = sd["decoder.decoder_pos_embed"]
        for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
            for kind in ("weight", "bias"):
                out[f"{name}.{kind}"] = sd[f"decoder.{name}.{kind}"]
        _blocks(sd, DECODER_BLOCKS, "decoder_blocks", out)
    if "classifier.weight" in sd:  # ViTForImageClassification: the CLS token after the final norm
        out["head.weight"], out["head.bias"] = sd["classifier.weight"], sd["classifier.bias"]
    return out


def hf_config_to_kwargs(config):
    """keras_mae constructor arguments from a HF `ViTMAEConfig` (object or its dict).

    Args:
        config: `transformers.ViTMAEConfig` or the dict of its `config.json`.

    Returns:
        dict of `MaskedAutoencoder` arguments (the decoder ones are ignored by an encoder), over the
        `keras_mae_config` that `save_hf` writes (the arguments HF has no field for: mask_strategy, ...).
    """
    config = config if isinstance(config, dict) else config.to_dict()
    ours = config.get("keras_mae_config") if isinstance(config.get("keras_mae_config"), dict) else {}
    lacking = [key for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
               if key not in config]
    if lacking:
        raise ValueError(f"The Hugging Face config lacks {', '.join(lacking)}: not a complete ViTMAEConfig "
                         "(save the model again with save_pretrained).")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"Only hidden_act='gelu' (exact) is supported. Received: hidden_act={config['hidden_act']!r}")
    size = config.get("image_size", 224)
    return dict(
        ours,
        image_size=tuple(size) if isinstance(size, (list, tuple)) else int(size),
        patch_size=int(config.get("patch_size", 16)),
        num_channels=int(config.get("num_channels", 3)),
        hidden_dim=int(config["hidden_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        mlp_dim=int(config["intermediate_size"]),
        decoder_hidden_dim=int(config.get("decoder_hidden_size", 512)),
        decoder_num_layers=int(config.get("decoder_num_hidden_layers", 8)),
        decoder_num_heads=int(config.get("decoder_num_attention_heads", 16)),
        decoder_mlp_dim=int(config.get("decoder_intermediate_size", 2048)),
        mask_ratio=float(config.get("mask_ratio", 0.75)),
        norm_pix_loss=bool(config.get("norm_pix_loss", False)),
        # HF's default 1e-12 (facebook/vit-mae-*) is kept for parity with the HF model; official is 1e-6.
        layer_norm_epsilon=float(config.get("layer_norm_eps", 1e-12)),
    )


def read_hf_directory(path):
    """Weights and config of a `save_pretrained` directory, without network or transformers.

    Args:
        path: directory with `config.json` and `model.safetensors` (sharded
            `model-*.safetensors` too) or `pytorch_model.bin`.

    Returns:
        `(state_dict, kwargs)`: official-layout numpy arrays and keras_mae constructor arguments.
    """
    from keras_mae.checkpoints.files import read_state_dict

    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path!r} has no config.json; pass a Hugging Face save_pretrained directory.")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except ValueError as error:
        raise ValueError(f"{config_path!r} is not valid JSON ({error}); save the model again with save_pretrained.") \
            from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path!r} holds a {type(config).__name__}, not a config; save the model again.")
    kwargs = hf_config_to_kwargs(config)  # a config that is not a ViTMAE's is named before any weight is read
    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) or sorted(glob.glob(os.path.join(path, "*.bin")))
    if not files:
        raise FileNotFoundError(f"{path!r} has no model.safetensors or pytorch_model.bin next to its config.json.")
    state_dict = {}
    for file in files:
        state_dict.update(read_state_dict(file))
    return hf_to_official(state_dict), kwargs
