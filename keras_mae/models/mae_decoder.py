"""The MAE decoder: mask tokens, unshuffle, light transformer, per-patch prediction."""

import keras
from keras import ops

from keras_mae.layers.batch_gather import batch_gather
from keras_mae.layers.layer_norm import LayerNorm
from keras_mae.layers.position_embedding import sincos_position_embedding
from keras_mae.layers.token_dense import TokenDense
from keras_mae.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_mae")
class MAEDecoder(keras.layers.Layer):
    """facebookresearch/mae `forward_decoder`.

    `decoder_embed` (Dense) on the encoder tokens (CLS included), mask tokens
    appended, unshuffled to patch order with `ids_restore`, fixed sin-cos
    `decoder_pos_embed` added, blocks, `decoder_norm`, `decoder_pred` to pixels;
    the CLS output is dropped.

    Args:
        grid_size: (grid_h, grid_w). Patch grid of the images.
        patch_dim: int. Pixel values per patch, patch_size * patch_size * channels.
        decoder_hidden_dim: int. Defaults to 512.
        decoder_num_layers: int. Defaults to 8.
        decoder_num_heads: int. Defaults to 16.
        decoder_mlp_dim: int. Defaults to 2048.
        layer_norm_epsilon: float. Defaults to 1e-6.

    Call arguments:
        latent: tensor (batch, 1 + num_kept, encoder_dim), CLS first.
        ids_restore: int tensor (batch, num_patches) from `RandomMasking`.

    Returns:
        Tensor (batch, num_patches, patch_dim): predicted patch pixels.
    """

    def __init__(
        self,
        grid_size,
        patch_dim,
        decoder_hidden_dim=512,
        decoder_num_layers=8,
        decoder_num_heads=16,
        decoder_mlp_dim=2048,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.grid_size = tuple(int(g) for g in grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.patch_dim = int(patch_dim)
        self.decoder_hidden_dim = int(decoder_hidden_dim)
        self.decoder_num_layers = int(decoder_num_layers)
        self.decoder_num_heads = int(decoder_num_heads)
        self.decoder_mlp_dim = int(decoder_mlp_dim)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def build(self, latent_shape, ids_restore_shape=None):
        dense = dict(kernel_initializer="glorot_uniform", bias_initializer="zeros", dtype=self.dtype_policy)
        width = self.decoder_hidden_dim
        self.decoder_embed = TokenDense(width, name="decoder_embed", **dense)
        self.decoder_embed.build(latent_shape)
        self.decoder_blocks = [
            TransformerBlock(
                width, self.decoder_num_heads, self.decoder_mlp_dim, 0.0, self.layer_norm_epsilon,
                dtype=self.dtype_policy, name=f"decoder_blocks_{i}",
            )
            for i in range(self.decoder_num_layers)
        ]
        for block in self.decoder_blocks:
            block.build((None, None, width))
        self.decoder_norm = LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="decoder_norm"
        )
        self.decoder_norm.build((None, None, width))
        self.decoder_pred = TokenDense(self.patch_dim, name="decoder_pred", **dense)
        self.decoder_pred.build((None, None, width))
        self.mask_token = self.add_weight(
            shape=(1, 1, width), initializer=keras.initializers.RandomNormal(stddev=0.02), name="mask_token"
        )
        self.decoder_pos_embed = self.add_weight(
            shape=(1, 1 + self.num_patches, width), initializer="zeros", trainable=False, name="decoder_pos_embed"
        )
        self.decoder_pos_embed.assign(sincos_position_embedding(*self.grid_size, width, cls_token=True)[None])
        self.built = True

    def call(self, latent, ids_restore, training=False):
        x = self.decoder_embed(latent)  # [B, 1 + L_keep, Dd]
        batch, num_visible = ops.shape(x)[0], ops.shape(x)[1] - 1
        mask_tokens = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype), (batch, self.num_patches - num_visible, self.decoder_hidden_dim)
        )
        patches = batch_gather(ops.concatenate([x[:, 1:], mask_tokens], axis=1), ids_restore)  # [B, L, Dd]
        x = ops.concatenate([x[:, :1], patches], axis=1) + ops.cast(self.decoder_pos_embed, x.dtype)
        for block in self.decoder_blocks:
            x = block(x, training=training)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:]  # [B, L, patch_dim]

    def compute_output_shape(self, latent_shape, ids_restore_shape=None):
        return (latent_shape[0], self.num_patches, self.patch_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "grid_size": self.grid_size,
                "patch_dim": self.patch_dim,
                "decoder_hidden_dim": self.decoder_hidden_dim,
                "decoder_num_layers": self.decoder_num_layers,
                "decoder_num_heads": self.decoder_num_heads,
                "decoder_mlp_dim": self.decoder_mlp_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
