"""`save_hf`: a keras_mae model as a Hugging Face folder (`config.json` + `model.safetensors`).

`MaskedAutoencoder` -> `ViTMAEForPreTraining`, `ViTEncoder` -> `ViTMAEModel`,
`ViTClassifier(global_pool=False)` -> `ViTForImageClassification`; each loads
strictly with `from_pretrained(folder)`. Keys get the transformers 4.x names
(`vit.encoder.layer.{i}.attention.attention.query`), the layout of the Hub's
`facebook/vit-mae-*` files, which 5.x renames on load. `config.json` also
carries `keras_mae_config` (`files.model_config`): `load_model(folder)` gives
back the same model, arguments HF has no field for (mask_strategy, seed, ...) included.
"""

import json
import os

import numpy as np

from keras_mae.checkpoints.files import CONFIG_KEY, model_config, write_state_dict
from keras_mae.checkpoints.hf import BLOCK_NAMES
from keras_mae.checkpoints.official import export_official_weights

HF_BLOCK_NAMES = {part: names[1] for part, names in BLOCK_NAMES.items()}  # the 4.x names


def _hf_blocks(sd, src, dst, out):
    """Official blocks `{src}.{i}.*` as HF's `{dst}.{i}.*`, the fused qkv split in three."""
    i = 0
    while f"{src}.{i}.norm1.weight" in sd:
        for kind in ("weight", "bias"):
            parts = dict(zip("qkv", np.split(sd[f"{src}.{i}.attn.qkv.{kind}"], 3, axis=0)))
            parts.update({part: sd[f"{src}.{i}.{part}.{kind}"] for part in HF_BLOCK_NAMES if part not in parts})
            out.update({f"{dst}.{i}.{HF_BLOCK_NAMES[part]}.{kind}": np.ascontiguousarray(value)
                        for part, value in parts.items()})
        i += 1


def official_to_hf(state_dict, prefix="vit."):
    """HF state dict (4.x names) from an official-layout one: the inverse of `hf.hf_to_official`.

    Args:
        state_dict: dict from official key to numpy array (PyTorch layout).
        prefix: "vit." for `ViTMAEForPreTraining` / `ViTForImageClassification`, "" for `ViTMAEModel`.

    Returns:
        dict from HF key to numpy array.
    """
    sd = state_dict
    out = {f"{prefix}embeddings.cls_token": sd["cls_token"], f"{prefix}embeddings.position_embeddings": sd["pos_embed"]}
    for kind in ("weight", "bias"):
        out[f"{prefix}embeddings.patch_embeddings.projection.{kind}"] = sd[f"patch_embed.proj.{kind}"]
        out[f"{prefix}layernorm.{kind}"] = sd[f"norm.{kind}"]
    _hf_blocks(sd, "blocks", f"{prefix}encoder.layer", out)
    if "decoder_embed.weight" in sd:
        out["decoder.mask_token"], out["decoder.decoder_pos_embed"] = sd["mask_token"], sd["decoder_pos_embed"]
        for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
            out.update({f"decoder.{name}.{kind}": sd[f"{name}.{kind}"] for kind in ("weight", "bias")})
        _hf_blocks(sd, "decoder_blocks", "decoder.decoder_layers", out)
    if "head.weight" in sd:
        out["classifier.weight"], out["classifier.bias"] = sd["head.weight"], sd["head.bias"]
    return out


def _architecture(model):
    """(HF class name, `model_type`, key prefix) of a model, or a one-line error naming what to do instead."""
    from keras_mae.models import MaskedAutoencoder, ViTClassifier, ViTEncoder

    if isinstance(model, MaskedAutoencoder):
        if model.encode_mask_tokens:
            raise ValueError("MaskedAutoencoder(encode_mask_tokens=True) has no Hugging Face counterpart (its "
                             "encoder sees mask tokens); save it with model.save('model.keras') instead.")
        return "ViTMAEForPreTraining", "vit_mae", "vit."
    if isinstance(model, ViTEncoder):
        return "ViTMAEModel", "vit_mae", ""
    if isinstance(model, ViTClassifier):
        if model.global_pool or not model.num_classes:
            raise ValueError(f"ViTClassifier(global_pool={model.global_pool}, num_classes={model.num_classes}) has "
                             "no Hugging Face counterpart (ViTForImageClassification classifies the normed CLS "
                             "token with a head): use save_official, or save_hf(model.encoder, folder).")
        return "ViTForImageClassification", "vit", "vit."
    raise ValueError(f"save_hf exports a MaskedAutoencoder, ViTEncoder or ViTClassifier; received "
                     f"{type(model).__name__}. Pass one of those (a model wrapping one: its encoder).")


def _check_square(model, architecture):
    height, width = model.image_size
    if height != width and architecture == "ViTMAEForPreTraining":
        raise ValueError(f"Hugging Face ViTMAEForPreTraining builds square grids only (its decoder's sin-cos init "
                         f"takes sqrt(num_patches)); received image_size={height}x{width}. Use save_official, or "
                         f"export a square copy: save_hf(load_model(path, image_size={max(height, width)}), folder).")


def hf_config(model, architecture, model_type):
    """The `config.json` dict of a model's HF counterpart, with its `keras_mae_config`."""
    height, width = model.image_size
    config = dict(
        architectures=[architecture], model_type=model_type, hidden_size=model.hidden_dim,
        num_hidden_layers=model.num_layers, num_attention_heads=model.num_heads, intermediate_size=model.mlp_dim,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02,
        layer_norm_eps=float(model.layer_norm_epsilon), image_size=height if height == width else [height, width],
        patch_size=model.patch_size, num_channels=model.num_channels, qkv_bias=True,
    )
    if model_type == "vit_mae":
        config["mask_ratio"] = float(getattr(model, "mask_ratio", 0.0))  # an encoder's HF model masks nothing
    if architecture == "ViTForImageClassification":
        labels = {str(i): f"LABEL_{i}" for i in range(model.num_classes)}
        config.update(id2label=labels, label2id={name: int(i) for i, name in labels.items()})
    if architecture == "ViTMAEForPreTraining":
        config.update(
            decoder_hidden_size=model.decoder_hidden_dim, decoder_num_hidden_layers=model.decoder_num_layers,
            decoder_num_attention_heads=model.decoder_num_heads, decoder_intermediate_size=model.decoder_mlp_dim,
            norm_pix_loss=model.norm_pix_loss,
        )
    return {**config, CONFIG_KEY: model_config(model)}


def save_hf(model, folder):
    """Saves a model as a Hugging Face folder that `transformers` loads strictly.

    A `MaskedAutoencoder` becomes a `ViTMAEForPreTraining` (its `logits` given
    the same `noise` are our `pred`, its loss ours), a `ViTEncoder` a
    `ViTMAEModel` (with `mask_ratio` 0: with `noise=torch.arange(num_patches)`
    its `last_hidden_state` is our tokens), a `ViTClassifier(global_pool=False)`
    a `ViTForImageClassification`. `keras_mae.checkpoints.load_model(folder)`
    reads the folder back. `ViTMAEForPreTraining` needs a square image size (its
    decoder cannot be built otherwise); `ViTMAEModel` loads a non-square one with transformers 5.x.

    Args:
        model: a `MaskedAutoencoder`, `ViTEncoder` or `ViTClassifier` (CLS token, with a head).
        folder: str or path-like; created if needed, `config.json` and `model.safetensors` overwritten.

    Returns:
        The folder.
    """
    architecture, model_type, prefix = _architecture(model)
    _check_square(model, architecture)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    write_state_dict(official_to_hf(export_official_weights(model), prefix), os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config(model, architecture, model_type), f, indent=2, sort_keys=True)
        f.write("\n")
    return folder
