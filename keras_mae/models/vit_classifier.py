"""ViT classifier for fine-tuning, as facebookresearch/mae `models_vit.py` (`VisionTransformer`)."""

import re

import keras
from keras import ops

from keras_mae.layers.layer_norm import LayerNormalization
from keras_mae.models.init_arguments import init_arguments
from keras_mae.models.vit_encoder import ViTEncoder

# Official `lr_decay.get_layer_id_for_vit`: stem -> 0, block i -> i + 1, rest -> num_layers + 1.
_STEM = re.compile(r"(^|/)(cls_token|pos_embed|patch_embed)([/.]|$)")
_BLOCK = re.compile(r"(^|/)blocks[_.](\d+)([/.]|$)")


@keras.saving.register_keras_serializable(package="keras_mae")
class ViTClassifier(keras.Model):
    """ViT encoder + pooled features + linear head: the MAE fine-tuning model.

    As the official `VisionTransformer(global_pool=True)`: with `global_pool`
    the patch tokens (CLS excluded) of the last block are averaged and
    normalised by `fc_norm`, and the encoder's final `norm` is unused (frozen);
    without it, the final `norm` is applied and the CLS token is the feature.
    `self.encoder` is a `ViTEncoder`, so a pretrained MAE encoder's weights
    transfer with `load_official_weights(classifier.encoder, ...)`.

    The position embedding is the encoder's fixed sin-cos table (loaded from a
    checkpoint when there is one); the official fine-tuning also learns it.

    Args:
        image_size: int or (height, width). Divisible by `patch_size`.
        patch_size: int. Side of the square patches.
        num_channels: int. Image channels. Defaults to 3.
        hidden_dim, num_layers, num_heads, mlp_dim: int. Encoder size
            (ViT-B/16: 768, 12, 12, 3072).
        num_classes: int. Outputs of the `head` Dense; 0 for no head (the
            pooled features are returned). Defaults to 1000.
        global_pool: bool. Mean of patch tokens + `fc_norm` (True) or final
            `norm` + CLS token (False). Defaults to True.
        drop_path_rate: float. Stochastic depth (0.1 in the official recipe). Defaults to 0.
        layer_norm_epsilon: float. Defaults to 1e-6.

    Call arguments:
        images: float tensor (batch, height, width, num_channels), normalised.
        training: bool.

    Returns:
        Logits (batch, num_classes), or features (batch, hidden_dim) when num_classes is 0.

    >>> import numpy as np
    >>> model = ViTClassifier(8, 4, 1, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32, num_classes=5)
    >>> tuple(model(np.zeros((2, 8, 8, 1), "float32")).shape)
    (2, 5)
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
        num_classes=1000,
        global_pool=True,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_classes) < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no head). Received: num_classes={num_classes}")
        self.num_classes = int(num_classes)
        self.global_pool = bool(global_pool)

        # === Layers ===
        self.encoder = ViTEncoder(
            image_size, patch_size, num_channels, hidden_dim, num_layers, num_heads, mlp_dim,
            pool="mean" if self.global_pool else "cls", drop_path_rate=drop_path_rate,
            layer_norm_epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="encoder",
        )
        token_shape = (None, self.encoder.hidden_dim)
        self.fc_norm = None
        if self.global_pool:
            self.encoder.norm.trainable = False  # unused, as the official model's norm is deleted
            self.fc_norm = LayerNormalization(
                epsilon=self.encoder.layer_norm_epsilon, dtype=self.dtype_policy, name="fc_norm"
            )
            self.fc_norm.build(token_shape)
        self.head = None
        if self.num_classes:
            # The official fine-tuning re-initialises the head with trunc_normal(std=2e-5) (MoCo v3).
            self.head = keras.layers.Dense(
                self.num_classes, kernel_initializer=keras.initializers.TruncatedNormal(stddev=2e-5),
                bias_initializer="zeros", dtype=self.dtype_policy, name="head",
            )
            self.head.build(token_shape)
        self.built = True

    # Encoder hyper-parameters live on the encoder; one source of truth.
    image_size = property(lambda self: self.encoder.image_size)
    patch_size = property(lambda self: self.encoder.patch_size)
    grid_size = property(lambda self: self.encoder.grid_size)
    num_channels = property(lambda self: self.encoder.num_channels)
    hidden_dim = property(lambda self: self.encoder.hidden_dim)
    num_layers = property(lambda self: self.encoder.num_layers)
    num_heads = property(lambda self: self.encoder.num_heads)
    mlp_dim = property(lambda self: self.encoder.mlp_dim)
    drop_path_rate = property(lambda self: self.encoder.drop_path_rate)
    layer_norm_epsilon = property(lambda self: self.encoder.layer_norm_epsilon)

    def call(self, images, training=False):
        if self.global_pool:
            tokens = self.encoder(images, training=training, final_norm=False)  # [B, 1 + L, D]
            x = self.fc_norm(ops.mean(tokens[:, 1:], axis=1))
        else:
            x = self.encoder(images, training=training)[:, 0]
        return x if self.head is None else self.head(x)

    def layer_id(self, variable_path):
        """Layer id of a variable for layer-wise lr decay, as the official `get_layer_id_for_vit`.

        Args:
            variable_path: str (a keras `variable.path` such as
                "encoder/blocks_3/qkv/kernel", or an official key such as
                "blocks.3.attn.qkv.weight") or a variable.

        Returns:
            int: 0 for cls_token / pos_embed / patch_embed, i + 1 for block i,
            num_layers + 1 for the rest (fc_norm, head, ...).
        """
        path = getattr(variable_path, "path", variable_path)
        if _STEM.search(path):
            return 0
        block = _BLOCK.search(path)
        if block:
            return int(block.group(2)) + 1
        return self.num_layers + 1

    # Built-in preset names: {name: {description, params, image_size, patch_size, num_channels}}, sizes by arithmetic.
    from keras_mae.models.preset_io import builtin_presets as _builtin_presets
    presets = _builtin_presets("ViTClassifier")
    del _builtin_presets

    @classmethod
    def from_preset(cls, name, **overrides):
        """The classifier on a built-in `MaskedAutoencoder` preset's encoder (random weights, e.g.
        ("mae_vit_base_patch16", num_classes=10)), or on a saved model's: a `save_to_preset` folder, `.keras`
        file, pretraining workdir, official checkpoint or hub handle, as `MaskedAutoencoder.from_preset`. From an
        MAE or an encoder the encoder carries the pretrained weights and `fc_norm` and the head are new; from a
        classifier everything loads (a new head when `num_classes=` differs). Overrides on saved models: those
        leaving the weights as they are (`num_classes`, `drop_path_rate`, `image_size`, ...)."""
        from keras_mae.models.preset_io import from_preset

        return from_preset(cls, name, **overrides)

    def save_to_preset(self, preset_dir):
        """Writes config.json, model.weights.h5 and metadata.json (keras-hub's layout) for `from_preset`."""
        from keras_mae.models.preset_io import save_to_preset

        save_to_preset(self, preset_dir)

    def get_config(self):
        return {**super().get_config(), **init_arguments(self)}
