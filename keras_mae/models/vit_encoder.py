"""Standalone ViT encoder: the MAE encoder, usable without any decoder."""

import keras
import numpy as np
from keras import ops

from keras_mae.layers.batch_gather import batch_gather
from keras_mae.layers.patch_embedding import PatchEmbedding
from keras_mae.layers.position_embedding import sincos_position_embedding
from keras_mae.layers.random_masking import RandomMasking
from keras_mae.layers.transformer_block import TransformerBlock
from keras_mae.models.image_size import grid_shape, image_shape

POOLS = ("cls", "mean")


@keras.saving.register_keras_serializable(package="keras_mae")
class ViTEncoder(keras.Model):
    """Vision Transformer encoder of facebookresearch/mae (`forward_encoder`).

    Patch embedding + fixed 2-D sin-cos position embedding, optional random
    masking, CLS token (+ its zero position row) prepended, pre-norm blocks,
    final LayerNorm.

    Args:
        image_size: int or (height, width). Input size, divisible by patch_size.
        patch_size: int. Side of the square patches.
        num_channels: int. Image channels. Defaults to 3.
        hidden_dim: int. Token width. Defaults to 768.
        num_layers: int. Transformer blocks. Defaults to 12.
        num_heads: int. Attention heads. Defaults to 12.
        mlp_dim: int. MLP hidden width. Defaults to 3072.
        mask_ratio: float in [0, 1). Fraction removed when masking is asked for. Defaults to 0.75.
        mask_strategy: str. "random", "block" or "grid". Defaults to "random".
        pool: str. "cls" (the CLS token) or "mean" (mean of patch tokens) for
            `features`. Defaults to "cls".
        drop_path_rate: float. Stochastic depth, rising linearly over blocks. Defaults to 0.
        layer_norm_epsilon: float. Defaults to 1e-6.
        seed: int or None. Seed of the masking's `SeedGenerator`.
        encode_mask_tokens: bool. The paper's Table 1c ablation: with masking,
            removed patches are replaced by a learned mask token and the
            encoder sees all of them (about 3x the encoder FLOPs at 75%).
            Defaults to False.

    Call arguments:
        images: float tensor (batch, height, width, num_channels), normalised.
        noise: optional (batch, num_patches) noise fixing the mask; implies masking.
        masking: bool. Remove `mask_ratio` of the patches. Defaults to False.
        final_norm: bool. Apply the final LayerNorm (False for global-pool heads). Defaults to True.
        training: bool.

    Returns:
        Without masking, tokens (batch, 1 + num_patches, hidden_dim), CLS
        first. With masking, `(tokens, mask, ids_restore)`: tokens (batch,
        1 + num_kept, hidden_dim) and the outputs of `RandomMasking`.

    >>> import numpy as np
    >>> encoder = ViTEncoder(8, 4, 1, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    >>> encoder(np.zeros((2, 8, 8, 1), "float32")).shape
    (2, 5, 16)
    """

    def __init__(
        self,
        image_size,
        patch_size,
        num_channels=3,
        hidden_dim=768,
        num_layers=12,
        num_heads=12,
        mlp_dim=3072,
        mask_ratio=0.75,
        mask_strategy="random",
        pool="cls",
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        seed=None,
        encode_mask_tokens=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}. Received: pool={pool!r}")
        self.image_size = image_shape(image_size)
        self.patch_size = int(patch_size)
        self.grid_size = grid_shape(self.image_size, self.patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_channels = int(num_channels)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.mask_ratio = float(mask_ratio)
        self.mask_strategy = mask_strategy
        self.pool = pool
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.seed = seed
        self.encode_mask_tokens = bool(encode_mask_tokens)

        # === Layers ===
        self.patch_embed = PatchEmbedding(self.patch_size, self.hidden_dim, dtype=self.dtype_policy, name="patch_embed")
        self.masking = RandomMasking(
            mask_ratio, mask_strategy, self.grid_size, seed=seed, dtype=self.dtype_policy, name="masking"
        )
        rates = np.linspace(0.0, self.drop_path_rate, self.num_layers) if self.num_layers else []
        self.blocks = [
            TransformerBlock(
                self.hidden_dim, self.num_heads, self.mlp_dim, float(rate), self.layer_norm_epsilon,
                dtype=self.dtype_policy, name=f"blocks_{i}",
            )
            for i, rate in enumerate(rates)
        ]
        self.norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm")
        self.build((None,) + self.image_size + (self.num_channels,))

    def build(self, input_shape):
        self.patch_embed.build(input_shape)
        token_shape = (None, None, self.hidden_dim)
        for block in self.blocks:
            block.build(token_shape)
        self.norm.build(token_shape)
        self.cls_token = self.add_weight(
            shape=(1, 1, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="cls_token",
        )
        self.pos_embed = self.add_weight(
            shape=(1, 1 + self.num_patches, self.hidden_dim), initializer="zeros", trainable=False, name="pos_embed"
        )
        self.pos_embed.assign(sincos_position_embedding(*self.grid_size, self.hidden_dim, cls_token=True)[None])
        if self.encode_mask_tokens:
            self.mask_token = self.add_weight(
                shape=(1, 1, self.hidden_dim), initializer=keras.initializers.RandomNormal(stddev=0.02), name="mask_token"
            )
        self.built = True

    def call(self, images, noise=None, masking=False, training=False, final_norm=True):
        x = self.patch_embed(images) + self.pos_embed[:, 1:]  # [B, L, D]
        if masking or noise is not None:
            if self.encode_mask_tokens:
                x, mask, ids_restore = self._with_mask_tokens(x, noise)  # [B, L, D]
            else:
                x, mask, ids_restore = self.masking(x, noise=noise)  # [B, L_keep, D]
        cls = ops.broadcast_to(self.cls_token + self.pos_embed[:, :1], (ops.shape(x)[0], 1, self.hidden_dim))
        x = ops.concatenate([ops.cast(cls, x.dtype), x], axis=1)
        for block in self.blocks:
            x = block(x, training=training)
        if final_norm:
            x = self.norm(x)
        if masking or noise is not None:
            return x, mask, ids_restore
        return x

    def _with_mask_tokens(self, x, noise):
        """All tokens, removed ones replaced by the mask token (+ position), in shuffled order.

        Shuffled (kept first) so the decoder's unshuffle by `ids_restore`
        works unchanged, with zero mask tokens of its own to append.
        """
        _, mask, ids_restore = self.masking(x, noise=noise)
        tokens = ops.cast(self.mask_token, x.dtype) + self.pos_embed[:, 1:]
        x = ops.where(mask[..., None] > 0, ops.cast(tokens, x.dtype), x)
        return batch_gather(x, ops.argsort(ids_restore, axis=1)), mask, ids_restore

    def features(self, images, pool=None, training=False):
        """Pooled features (batch, hidden_dim) of unmasked images, for downstream use.

        Args:
            images: float tensor (batch, height, width, num_channels).
            pool: "cls" or "mean"; the encoder's `pool` when None.
        """
        pool = pool or self.pool
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}. Received: pool={pool!r}")
        tokens = self(images, training=training)
        return tokens[:, 0] if pool == "cls" else ops.mean(tokens[:, 1:], axis=1)

    @classmethod
    def from_preset(cls, name, **overrides):
        """The encoder of a `MaskedAutoencoder` preset, e.g. "mae_vit_base_patch16"."""
        from keras_mae.models.presets import encoder_config

        return cls(**{**encoder_config(name), **overrides})

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "num_channels": self.num_channels,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "mask_ratio": self.mask_ratio,
                "mask_strategy": self.mask_strategy,
                "pool": self.pool,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "seed": self.seed,
                "encode_mask_tokens": self.encode_mask_tokens,
            }
        )
        return config
