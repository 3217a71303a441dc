"""The ViT backbone: the MAE encoder without the masking, usable without any decoder."""

import keras
import numpy as np
from keras import ops

from keras_mae.layers.layer_norm import LayerNormalization
from keras_mae.layers.patch_embedding import PatchEmbedding
from keras_mae.layers.position_embedding import sincos_position_embedding
from keras_mae.layers.transformer_block import TransformerBlock
from keras_mae.models.image_size import grid_shape, image_shape
from keras_mae.models.init_arguments import init_arguments

POOLS = ("cls", "mean")


# Arguments of keras_mae 0.1's encoder, which carried pretraining settings: ignored when an old config loads.
LEGACY_KEYS = ("mask_ratio", "mask_strategy", "pool", "seed", "encode_mask_tokens")


@keras.saving.register_keras_serializable(package="keras_mae")
class ViTEncoder(keras.Model):
    """Vision Transformer backbone, as the encoder of facebookresearch/mae (`forward_encoder`) without the masking.

    Patch embedding + fixed 2-D sin-cos position embedding (`embed`), then the
    CLS token (+ its zero position row) prepended, pre-norm blocks and the
    final LayerNorm (`encode`). `MaskedAutoencoder` masks between the two.

    Args:
        image_size: int or (height, width). Input size, divisible by patch_size.
        patch_size: int. Side of the square patches.
        num_channels: int. Image channels. Defaults to 3.
        hidden_dim: int. Token width. Defaults to 768.
        num_layers: int. Transformer blocks. Defaults to 12.
        num_heads: int. Attention heads. Defaults to 12.
        mlp_dim: int. MLP hidden width. Defaults to 3072.
        drop_path_rate: float. Stochastic depth, rising linearly over blocks. Defaults to 0.
        layer_norm_epsilon: float. Defaults to 1e-6.

    Call arguments:
        images: float tensor (batch, height, width, num_channels), normalised.
        training: bool.
        final_norm: bool. Apply the final LayerNorm (False for global-pool heads). Defaults to True.
        return_attention: bool. Also return each block's attention probabilities (computed written out
            instead of by the fused kernel, so slower: ask only when the maps are wanted). Defaults to False.

    Returns:
        Tokens (batch, 1 + num_patches, hidden_dim), CLS first. With `return_attention`,
        `(tokens, attention)`: attention a list, one (batch, num_heads, 1 + num_patches, 1 + num_patches)
        float32 tensor per block, queries along axis 2 (row 0: what the CLS token attends to).

    >>> import numpy as np
    >>> encoder = ViTEncoder(8, 4, 1, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    >>> tuple(encoder(np.zeros((2, 8, 8, 1), "float32")).shape)
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
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        for key in LEGACY_KEYS:
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        self.image_size = image_shape(image_size)
        self.patch_size = int(patch_size)
        self.grid_size = grid_shape(self.image_size, self.patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_channels = int(num_channels)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), e.g. 0.1. Received: drop_path_rate={drop_path_rate}")

        # === Layers ===
        self.patch_embed = PatchEmbedding(self.patch_size, self.hidden_dim, dtype=self.dtype_policy, name="patch_embed")
        rates = np.linspace(0.0, self.drop_path_rate, self.num_layers) if self.num_layers else []
        self.blocks = [
            TransformerBlock(
                self.hidden_dim, self.num_heads, self.mlp_dim, float(rate), self.layer_norm_epsilon,
                dtype=self.dtype_policy, name=f"blocks_{i}",
            )
            for i, rate in enumerate(rates)
        ]
        self.norm = LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm")
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
        self.built = True

    def embed(self, images):
        """Patch tokens with their position embedding, (batch, num_patches, hidden_dim): what masking selects from."""
        return self.patch_embed(images) + self.pos_embed[:, 1:]

    def encode(self, tokens, training=False, final_norm=True, return_attention=False):
        """CLS (+ its position row) prepended to `tokens` (batch, n, hidden_dim), then the blocks and the final norm.

        Returns:
            (batch, 1 + n, hidden_dim), CLS first; with `return_attention`, `(tokens, attention)` as `call`.
        """
        x = self._with_cls(tokens)
        attention = []
        for block in self.blocks:
            if return_attention:
                x, probabilities = block(x, training=training, return_attention=True)
                attention.append(probabilities)
            else:
                x = block(x, training=training)
        x = self.norm(x) if final_norm else x
        return (x, attention) if return_attention else x

    def _with_cls(self, tokens):
        cls = ops.broadcast_to(self.cls_token + self.pos_embed[:, :1], (ops.shape(tokens)[0], 1, self.hidden_dim))
        return ops.concatenate([ops.cast(cls, tokens.dtype), tokens], axis=1)

    def call(self, images, training=False, final_norm=True, return_attention=False):
        return self.encode(self.embed(images), training=training, final_norm=final_norm,
                           return_attention=return_attention)

    def intermediate_features(self, images, blocks=None, final_norm=False, training=False):
        """The tokens after each chosen block, as timm's `get_intermediate_layers` and Hugging Face's
        `hidden_states[i + 1]`: what dense heads and layer-wise probes read.

        Only the blocks up to the deepest chosen one run.

        Args:
            images: float tensor (batch, height, width, num_channels), normalised.
            blocks: list of block indices, 0 for the first, negative from the last (-1: the last block).
                None: every block. Defaults to None.
            final_norm: bool. Apply the final LayerNorm to each chosen block's tokens. Defaults to False.
            training: bool.

        Returns:
            A list, in the order of `blocks`, of (batch, 1 + num_patches, hidden_dim) tensors, CLS first.

        >>> import numpy as np
        >>> encoder = ViTEncoder(8, 4, 1, hidden_dim=16, num_layers=3, num_heads=2, mlp_dim=32)
        >>> [tuple(t.shape) for t in encoder.intermediate_features(np.zeros((2, 8, 8, 1), "float32"), [0, -1])]
        [(2, 5, 16), (2, 5, 16)]
        """
        indices = self._block_indices(blocks)
        x, outputs = self._with_cls(self.embed(images)), {}
        for i, block in enumerate(self.blocks[: max(indices, default=-1) + 1]):
            x = block(x, training=training)
            if i in indices:
                outputs[i] = self.norm(x) if final_norm else x
        return [outputs[i] for i in indices]

    def _block_indices(self, blocks):
        if blocks is None:
            return list(range(self.num_layers))
        if isinstance(blocks, int):
            blocks = [blocks]
        indices = []
        for block in blocks:
            if not -self.num_layers <= int(block) < self.num_layers:
                raise ValueError(f"blocks must be indices in [-{self.num_layers}, {self.num_layers}) for this "
                                 f"{self.num_layers}-block encoder. Received: blocks={list(blocks)}")
            indices.append(int(block) % self.num_layers)
        return indices

    def features(self, images, pool="cls", training=False):
        """Pooled features (batch, hidden_dim) for downstream use, as the official `models_vit.VisionTransformer`.

        Args:
            images: float tensor (batch, height, width, num_channels).
            pool: "cls": the CLS token after the final LayerNorm (the official default). "mean": the mean
                of the patch tokens before the final LayerNorm, normalised by a LayerNorm without weights
                (the official `global_pool`, whose `fc_norm` a frozen-encoder probe never trains).
            training: bool.
        """
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}. Received: pool={pool!r}")
        if pool == "cls":
            return self(images, training=training)[:, 0]
        pooled = ops.mean(self(images, training=training, final_norm=False)[:, 1:], axis=1)  # [B, D]
        mean = ops.mean(pooled, axis=-1, keepdims=True)
        var = ops.var(pooled, axis=-1, keepdims=True)
        return (pooled - mean) / ops.sqrt(var + self.layer_norm_epsilon)

    def with_dtype_policy(self, dtype_policy):
        """This encoder's twin computing in `dtype_policy` (e.g. "mixed_bfloat16"), with a copy of its weights.

        For inference in another precision (the linear probe's feature extraction on a CPU with bf16 matmuls);
        `self` is left as it is. Variables of a mixed policy stay float32, so the weights are copied exactly.

        >>> import numpy as np
        >>> encoder = ViTEncoder(8, 4, 1, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
        >>> twin = encoder.with_dtype_policy("mixed_bfloat16")
        >>> keras.backend.standardize_dtype(twin(np.zeros((1, 8, 8, 1), "float32")).dtype), twin.variables[0].dtype
        ('bfloat16', 'float32')
        """
        policy = keras.dtype_policies.get(dtype_policy)
        if policy.variable_dtype != self.dtype_policy.variable_dtype:
            raise ValueError(f"dtype_policy must keep the variables' dtype ({self.dtype_policy.variable_dtype}) so that "
                             f"the weights copy exactly, e.g. 'mixed_bfloat16'. Received: dtype_policy={dtype_policy!r}")
        config = {key: value for key, value in self.get_config().items() if key not in ("dtype", "name")}
        twin = type(self)(**config, dtype=policy, name=f"{self.name}_{policy.name}")
        twin.set_weights(self.get_weights())
        return twin

    def load_own_variables(self, store):
        # keras_mae 0.1 saved the mask-token ablation's token here (cls_token, mask_token, pos_embed): it now
        # belongs to the MaskedAutoencoder, which asks for it through `_legacy_mask_token`.
        if len(store.keys()) == len(self._trainable_variables) + len(self._non_trainable_variables) + 1:
            target = getattr(self, "_legacy_mask_token", None)
            if target is not None:
                target.assign(store["1"])
            self.cls_token.assign(store["0"])
            self.pos_embed.assign(store["2"])
            return
        super().load_own_variables(store)

    # Built-in preset names: {name: {description, params, image_size, patch_size, num_channels}}, sizes by arithmetic.
    from keras_mae.models.preset_io import builtin_presets as _builtin_presets
    presets = _builtin_presets("ViTEncoder")
    del _builtin_presets

    @classmethod
    def from_preset(cls, name, **overrides):
        """The encoder of a built-in `MaskedAutoencoder` preset (random weights, e.g. "mae_vit_base_patch16"), or
        the encoder, weights loaded, of a saved one: a `save_to_preset` folder, a `.keras` file, a pretraining
        workdir, an official checkpoint or a hub handle, as `MaskedAutoencoder.from_preset` (an MAE's or a
        classifier's encoder is taken). Overrides on saved models: those leaving the weights as they are
        (`drop_path_rate`, `image_size`, ...)."""
        from keras_mae.models.preset_io import from_preset

        return from_preset(cls, name, **overrides)

    def save_to_preset(self, preset_dir):
        """Writes config.json, model.weights.h5 and metadata.json (keras-hub's layout) for `from_preset`."""
        from keras_mae.models.preset_io import save_to_preset

        save_to_preset(self, preset_dir)

    def get_config(self):
        return {**super().get_config(), **init_arguments(self)}
