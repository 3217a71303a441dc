"""`ViTEncoder` <-> keras-hub `ViTBackbone`, weights copied, same outputs.

keras-hub's ViT is the same pre-norm ViT: a patch Conv2D, a class token, a
(1 + N, D) position table added to every token (CLS included), blocks of
LayerNorm -> MultiHeadAttention -> residual, LayerNorm -> Dense + exact GELU
-> Dense -> residual, and a final LayerNorm; its output is the normalised
sequence (batch, 1 + N, D), CLS first, as `ViTEncoder(images)`. Only the
attention's weights are laid out differently: our fused qkv kernel (D, 3D),
columns [q | k | v] each (heads, head_dim), is keras-hub's three (D, heads,
head_dim) kernels; our proj kernel (D, D) is its (heads, head_dim, D) output kernel.

Not carried, since neither model has a field for the other's: our `drop_path_rate`
(ViTBackbone has no stochastic depth) and keras-hub's dropout rates (ViTEncoder has
none); inference is unaffected. keras-hub's position table is a trainable
Embedding, ours a fixed one (as the official fine-tuning, keras-hub learns it).
"""

import numpy as np
from keras import ops

from keras_mae.checkpoints.pos_embed import is_sincos

_HINT = "pip install 'keras_mae[hub]'"


def _keras_hub(caller):
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(f"{caller} needs keras-hub: {_HINT}") from error
    return keras_hub


def _parts(backbone):
    """(embedding layer, list of keras-hub blocks, final LayerNorm) of a ViTBackbone."""
    encoder = backbone.get_layer("vit_encoder")
    return backbone.get_layer("vit_patching_and_embedding"), encoder.encoder_layers, encoder.layer_norm


def _numpy(variable):
    return ops.convert_to_numpy(variable).astype("float32")


def _set(variable, array):
    variable.assign(np.asarray(array, "float32").reshape(variable.shape).astype(variable.dtype))


def _bias(layer, size):
    """A layer's bias as numpy, zeros when it has none (keras-hub's `use_*_bias=False`)."""
    return _numpy(layer.bias) if getattr(layer, "bias", None) is not None else np.zeros(size, "float32")


def to_keras_hub(encoder):
    """A keras-hub `ViTBackbone` carrying the weights of a keras_mae encoder.

    Args:
        encoder: a `ViTEncoder`, or a `MaskedAutoencoder` / `ViTClassifier` (its `.encoder` is taken;
            a classifier's head and `fc_norm` are not part of a backbone).

    Returns:
        `keras_hub.models.ViTBackbone` with `image_shape=(height, width, channels)` (channels_last),
        the same patch size, widths, depth, heads and epsilon; its position embedding is our fixed
        (1 + N, D) table. `backbone(images)` equals `encoder(images)`: (batch, 1 + N, D), CLS first.
    """
    keras_hub = _keras_hub("to_keras_hub")
    encoder = getattr(encoder, "encoder", encoder)
    if not hasattr(encoder, "patch_embed"):
        raise ValueError("Expected a ViTEncoder, MaskedAutoencoder or ViTClassifier. "
                         f"Received: {type(encoder).__name__}; pass one of those (or its .encoder).")
    height, width = encoder.image_size
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(height, width, encoder.num_channels), patch_size=encoder.patch_size,
        num_layers=encoder.num_layers, num_heads=encoder.num_heads, hidden_dim=encoder.hidden_dim,
        mlp_dim=encoder.mlp_dim, layer_norm_epsilon=encoder.layer_norm_epsilon,
        data_format="channels_last", dtype=encoder.dtype_policy.name,
    )
    embedding, blocks, final_norm = _parts(backbone)
    conv = encoder.patch_embed.projection
    _set(embedding.class_token, _numpy(encoder.cls_token))
    _set(embedding.patch_embedding.kernel, _numpy(conv.kernel))
    _set(embedding.patch_embedding.bias, _numpy(conv.bias))
    _set(embedding.position_embedding.embeddings, _numpy(encoder.pos_embed)[0])
    for ours, theirs in zip(encoder.blocks, blocks):
        q, k, v = np.split(_numpy(ours.qkv.kernel), 3, axis=1)  # each (D, D) -> (D, heads, head_dim)
        qb, kb, vb = np.split(_numpy(ours.qkv.bias), 3)
        mha = theirs.mha
        for dense, kernel, bias in ((mha.query_dense, q, qb), (mha.key_dense, k, kb), (mha.value_dense, v, vb)):
            _set(dense.kernel, kernel)
            _set(dense.bias, bias)
        _set(mha.output_dense.kernel, _numpy(ours.proj.kernel))  # (D, D) -> (heads, head_dim, D)
        _set(mha.output_dense.bias, _numpy(ours.proj.bias))
        for src, dst in ((ours.norm1, theirs.layer_norm_1), (ours.norm2, theirs.layer_norm_2)):
            _set(dst.gamma, _numpy(src.gamma))
            _set(dst.beta, _numpy(src.beta))
        for src, dst in ((ours.fc1, theirs.mlp.dense_1), (ours.fc2, theirs.mlp.dense_2)):
            _set(dst.kernel, _numpy(src.kernel))
            _set(dst.bias, _numpy(src.bias))
    _set(final_norm.gamma, _numpy(encoder.norm.gamma))
    _set(final_norm.beta, _numpy(encoder.norm.beta))
    return backbone


def _image_size(backbone):
    """(height, width, channels) of a ViTBackbone, either data format; a square patch side or a ValueError."""
    shape = tuple(backbone.image_shape)
    height, width, channels = shape if backbone.data_format == "channels_last" else (shape[1], shape[2], shape[0])
    patch = backbone.patch_size
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if patch[0] != patch[1]:
        raise ValueError(f"ViTEncoder has square patches only. Received: patch_size={patch}; "
                         "use a backbone with a square patch_size.")
    if not backbone.use_class_token:
        raise ValueError("ViTEncoder always has a class token. Received: use_class_token=False; "
                         "convert a backbone built with use_class_token=True.")
    return (height, width), channels, patch[0]


def from_keras_hub(backbone, allow_learned_position_embedding=False):
    """A keras_mae `ViTEncoder` carrying the weights of a keras-hub `ViTBackbone`: the inverse of `to_keras_hub`.

    A backbone built with `use_mha_bias`, `use_mlp_bias` or `use_patch_bias` False gets zero biases (the same
    outputs). A `channels_first` backbone converts too; the encoder takes (batch, height, width, channels).

    Args:
        backbone: `keras_hub.models.ViTBackbone` with a class token and square patches.
        allow_learned_position_embedding: bool. A position table that is not the 2-D sin-cos one of the
            backbone's patch grid (a learned one) is refused unless True; then it is copied into the
            encoder's fixed (non-trainable) `pos_embed`. Defaults to False.

    Returns:
        `ViTEncoder` whose `encoder(images)` equals `backbone(images)`: (batch, 1 + N, D), CLS first.
    """
    _keras_hub("from_keras_hub")
    from keras_mae.models.vit_encoder import ViTEncoder

    image_size, channels, patch_size = _image_size(backbone)
    embedding, blocks, final_norm = _parts(backbone)
    table = _numpy(embedding.position_embedding.embeddings)[None]  # (1, 1 + N, D)
    grid = (image_size[0] // patch_size, image_size[1] // patch_size)
    if not allow_learned_position_embedding and not is_sincos(table, grid):
        raise ValueError(
            f"The backbone's position embedding is not the 2-D sin-cos table of its {grid[0]}x{grid[1]} patch grid "
            "(a learned one): ViTEncoder's is fixed; pass allow_learned_position_embedding=True to copy it frozen."
        )
    dim, heads = backbone.hidden_dim, backbone.num_heads
    encoder = ViTEncoder(
        image_size, patch_size, channels, hidden_dim=dim, num_layers=backbone.num_layers, num_heads=heads,
        mlp_dim=backbone.mlp_dim, layer_norm_epsilon=backbone.layer_norm_epsilon, dtype=backbone.dtype_policy.name,
    )
    conv = embedding.patch_embedding
    _set(encoder.cls_token, _numpy(embedding.class_token))
    _set(encoder.pos_embed, table)
    _set(encoder.patch_embed.projection.kernel, _numpy(conv.kernel))
    _set(encoder.patch_embed.projection.bias, _bias(conv, dim))
    for ours, theirs in zip(encoder.blocks, blocks):
        mha = theirs.mha
        denses = (mha.query_dense, mha.key_dense, mha.value_dense)
        _set(ours.qkv.kernel, np.concatenate([_numpy(d.kernel).reshape(dim, dim) for d in denses], axis=1))
        _set(ours.qkv.bias, np.concatenate([_bias(d, (heads, dim // heads)).reshape(dim) for d in denses]))
        _set(ours.proj.kernel, _numpy(mha.output_dense.kernel))
        _set(ours.proj.bias, _bias(mha.output_dense, dim))
        for dst, src in ((ours.norm1, theirs.layer_norm_1), (ours.norm2, theirs.layer_norm_2)):
            _set(dst.gamma, _numpy(src.gamma))
            _set(dst.beta, _numpy(src.beta))
        for dst, src in ((ours.fc1, theirs.mlp.dense_1), (ours.fc2, theirs.mlp.dense_2)):
            _set(dst.kernel, _numpy(src.kernel))
            _set(dst.bias, _bias(src, dst.units))
    _set(encoder.norm.gamma, _numpy(final_norm.gamma))
    _set(encoder.norm.beta, _numpy(final_norm.beta))
    return encoder
