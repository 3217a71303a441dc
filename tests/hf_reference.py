"""A Hugging Face `ViTMAEForPreTraining` as the PyTorch reference, and its weights in the official layout."""

import numpy as np

from tests import reference_mae as ref


def build_hf_mae(config, norm_pix_loss, seed=0):
    """A random HF ViTMAE with real sin-cos position embeddings and random cls/mask tokens.

    transformers 5.x leaves position embeddings (frozen) and tokens at zero,
    which would make a parity test pass for the wrong reason; fill them.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    height, width = config["image_size"]
    p = config["patch_size"]
    hf_config = transformers.ViTMAEConfig(
        image_size=[height, width], patch_size=p, num_channels=config["num_channels"],
        hidden_size=config["hidden_dim"], num_hidden_layers=config["num_layers"],
        num_attention_heads=config["num_heads"], intermediate_size=config["mlp_dim"],
        decoder_hidden_size=config["decoder_hidden_dim"], decoder_num_hidden_layers=config["decoder_num_layers"],
        decoder_num_attention_heads=config["decoder_num_heads"], decoder_intermediate_size=config["decoder_mlp_dim"],
        mask_ratio=config.get("mask_ratio", 0.75), norm_pix_loss=norm_pix_loss, layer_norm_eps=1e-6,
        hidden_act="gelu", qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = transformers.ViTMAEForPreTraining(hf_config).eval()
    grid_h, grid_w = height // p, width // p
    with torch.no_grad():
        for param, dim in (
            (model.vit.embeddings.position_embeddings, config["hidden_dim"]),
            (model.decoder.decoder_pos_embed, config["decoder_hidden_dim"]),
        ):
            param.copy_(torch.from_numpy(ref.get_2d_sincos_pos_embed(dim, grid_h, grid_w, True)).float()[None])
        model.vit.embeddings.cls_token.normal_(std=0.02)
        model.decoder.mask_token.normal_(std=0.02)
        for name, param in model.named_parameters():  # HF inits biases to zero: make them count
            if name.endswith("bias"):
                param.normal_(std=0.02)
    return model


# transformers >= 5.x names (q_proj, mlp.fc1, ...), and the 4.x names before them.
HF_BLOCK_NAMES = {
    "new": {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
            "proj": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"},
    "old": {"q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
            "proj": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense"},
}


def _block_keys(prefix, hf_prefixes, sd, out):
    hf_prefix = next(p for p in hf_prefixes if f"{p}.0.layernorm_before.weight" in sd)
    names = HF_BLOCK_NAMES["new" if f"{hf_prefix}.0.attention.q_proj.weight" in sd else "old"]
    i = 0
    while f"{hf_prefix}.{i}.layernorm_before.weight" in sd:
        src, dst = f"{hf_prefix}.{i}", f"{prefix}.{i}"
        for kind in ("weight", "bias"):
            out[f"{dst}.attn.qkv.{kind}"] = np.concatenate(
                [sd[f"{src}.{names[n]}.{kind}"] for n in ("q", "k", "v")], axis=0
            )
            out[f"{dst}.norm1.{kind}"] = sd[f"{src}.layernorm_before.{kind}"]
            out[f"{dst}.norm2.{kind}"] = sd[f"{src}.layernorm_after.{kind}"]
            out[f"{dst}.attn.proj.{kind}"] = sd[f"{src}.{names['proj']}.{kind}"]
            out[f"{dst}.mlp.fc1.{kind}"] = sd[f"{src}.{names['fc1']}.{kind}"]
            out[f"{dst}.mlp.fc2.{kind}"] = sd[f"{src}.{names['fc2']}.{kind}"]
        i += 1


def hf_to_official(model):
    """Official facebookresearch/mae state dict (numpy) from a HF ViTMAEForPreTraining."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {
        "cls_token": sd["vit.embeddings.cls_token"],
        "pos_embed": sd["vit.embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["vit.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["vit.embeddings.patch_embeddings.projection.bias"],
        "mask_token": sd["decoder.mask_token"],
        "decoder_pos_embed": sd["decoder.decoder_pos_embed"],
    }
    for kind in ("weight", "bias"):
        out[f"norm.{kind}"] = sd[f"vit.layernorm.{kind}"]
        for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
            out[f"{name}.{kind}"] = sd[f"decoder.{name}.{kind}"]
    _block_keys("blocks", ("vit.layers", "vit.encoder.layer"), sd, out)
    _block_keys("decoder_blocks", ("decoder.decoder_layers",), sd, out)
    return out


def assert_matches_hf(model, reference, rng, atol=1e-4):
    """Our MAE and a transformers ViTMAEForPreTraining on the same images (8x8 RGB, 4 patches) and masking noise:
    the same mask, predictions within `atol`. Returns (images, our outputs, the reference's)."""
    import torch
    from keras import ops

    images = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    noise = rng.random((2, 4)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2)), noise=torch.from_numpy(noise))
    outputs = model(images, noise=noise)
    np.testing.assert_array_equal(ops.convert_to_numpy(outputs["mask"]), expected.mask.numpy())
    np.testing.assert_allclose(ops.convert_to_numpy(outputs["pred"]), expected.logits.numpy(), atol=atol, rtol=atol)
    return images, outputs, expected
