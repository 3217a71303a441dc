"""ViTDet's simple feature pyramid: multi-scale maps from a plain ViT for detection and segmentation heads."""

import numbers

import keras
from keras import ops

from keras_mae.layers.layer_norm import LayerNorm
from keras_mae.models.init_arguments import init_arguments
from keras_mae.models.vit_encoder import ViTEncoder

LEVELS = ("P2", "P3", "P4", "P5")
SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)  # one per level, as ViTDet's `scale_factors`
NORMS = ("layer_norm", None)


@keras.saving.register_keras_serializable(package="keras_mae")
class SimpleFeaturePyramid(keras.Model):
    """A `ViTEncoder`'s last-block tokens as a 2-D map, resampled to four scales: ViTDet's SimpleFeaturePyramid.

    As detectron2's `modeling/backbone/vit.py` `SimpleFeaturePyramid` with
    `scale_factors=(4.0, 2.0, 1.0, 0.5)` (Li et al. 2022, "Exploring Plain Vision
    Transformer Backbones for Object Detection", https://arxiv.org/abs/2203.16527):
    the base map is the last block's patch tokens (CLS dropped, and without the
    encoder's final LayerNorm: ViTDet's ViT has none), reshaped to
    (batch, H / p, W / p, hidden_dim), stride p = patch_size. Then per level:

    - P2 (scale 4): ConvTranspose 2x2 s2 (D -> D/2), LayerNorm, GELU, ConvTranspose 2x2 s2 (-> D/4).
    - P3 (scale 2): ConvTranspose 2x2 s2 (D -> D/2).
    - P4 (scale 1): the base map.
    - P5 (scale 0.5): MaxPool 2x2 s2.

    and on each: Conv 1x1 (no bias) -> LayerNorm -> Conv 3x3 "same" (no bias) ->
    LayerNorm, to `out_channels`. LayerNorms normalise the channels (epsilon
    1e-6, detectron2's "LN"). The strides are p/4, p/2, p, 2p: 4, 8, 16, 32 for
    patch 16, as the P2..P5 of a ResNet FPN. The keys are always "P2".."P5", the
    names keras-cv and keras-hub heads index (`keras_cv.models.retinanet.FeaturePyramid`
    reads inputs["P3"], ["P4"], ["P5"]; keras-hub's `pyramid_outputs` use "Pn" for
    stride 2**n): for patch 16 they mean what those heads assume; for other patch
    sizes (detectron2 names levels by stride) mind the strides. ViTDet's extra P6
    (max-pool of P5) is left to the head. The encoder's `norm` is unused and
    frozen, as in `ViTClassifier`.

    Args:
        encoder: `ViTEncoder` (or its serialised config). Its grid must have even sides (P5 halves it)
            and its hidden_dim be divisible by 4 (P2's channels before the 1x1 conv).
        out_channels: int. Channels of every output map. Defaults to 256.
        norm: "layer_norm" (ViTDet's "LN") or None (no norms, and the convs get biases, as detectron2's
            `norm=""`). Defaults to "layer_norm".

    Call arguments:
        images: float tensor (batch, height, width, num_channels), normalised, of the encoder's image_size.
        training: bool. Passed to the encoder (drop path).

    Returns:
        dict of channels-last maps; with (h, w) = encoder.grid_size:
        "P2" (batch, 4h, 4w, out_channels), "P3" (batch, 2h, 2w, out_channels),
        "P4" (batch, h, w, out_channels), "P5" (batch, h/2, w/2, out_channels).
        ViT-B/16 at 224: 56, 28, 14, 7 pixels a side; at 1024: 256, 128, 64, 32.

    >>> import numpy as np
    >>> encoder = ViTEncoder((16, 8), 4, 1, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    >>> pyramid = SimpleFeaturePyramid(encoder, out_channels=8)
    >>> {k: tuple(v.shape) for k, v in pyramid(np.zeros((2, 16, 8, 1), "float32")).items()}
    {'P2': (2, 16, 8, 8), 'P3': (2, 8, 4, 8), 'P4': (2, 4, 2, 8), 'P5': (2, 2, 1, 8)}
    """

    def __init__(self, encoder, out_channels=256, norm="layer_norm", **kwargs):
        super().__init__(**kwargs)
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if not isinstance(encoder, ViTEncoder):
            raise ValueError(f"encoder must be a ViTEncoder. Received: encoder of type {type(encoder).__name__}")
        if isinstance(out_channels, bool) or not isinstance(out_channels, numbers.Integral) or out_channels < 1:
            raise ValueError(f"out_channels must be a positive int, e.g. 256. Received: out_channels={out_channels!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}. Received: norm={norm!r}")
        if encoder.grid_size[0] % 2 or encoder.grid_size[1] % 2:
            raise ValueError(
                "The encoder's patch grid must have even sides, since P5 max-pools it by 2; choose an image_size "
                f"that is a multiple of 2 * patch_size. Received: image_size={encoder.image_size}, "
                f"patch_size={encoder.patch_size} (grid {encoder.grid_size})"
            )
        self.out_channels = int(out_channels)
        self.norm = norm

        # === Layers ===
        self.encoder = encoder
        self.encoder.norm.trainable = False  # unused: ViTDet reads the last block before any final norm
        dim, h, w = encoder.hidden_dim, *encoder.grid_size  # dim % 4 == 0: the encoder's sin-cos table needs it
        kw = {"dtype": self.dtype_policy}
        self.p2_up1 = keras.layers.Conv2DTranspose(dim // 2, 2, strides=2, name="p2_up1", **kw)
        self.p2_norm = self._norm("p2_norm", (None, 2 * h, 2 * w, dim // 2))
        self.p2_up2 = keras.layers.Conv2DTranspose(dim // 4, 2, strides=2, name="p2_up2", **kw)
        self.p3_up = keras.layers.Conv2DTranspose(dim // 2, 2, strides=2, name="p3_up", **kw)
        self.p5_pool = keras.layers.MaxPooling2D(2, strides=2, name="p5_pool", **kw)
        self.p2_up1.build((None, h, w, dim))
        self.p2_up2.build((None, 2 * h, 2 * w, dim // 2))
        self.p3_up.build((None, h, w, dim))
        # Per level: 1x1 conv -> norm -> 3x3 conv -> norm; biases only without norms, as detectron2's `use_bias`.
        self.lateral, self.lateral_norm, self.output_conv, self.output_norm = [], [], [], []
        out_shape, use_bias = (None, None, None, self.out_channels), norm is None
        for level, channels in zip(LEVELS, (dim // 4, dim // 2, dim, dim)):
            name = level.lower()
            lateral = keras.layers.Conv2D(self.out_channels, 1, use_bias=use_bias, name=f"{name}_lateral", **kw)
            lateral.build((None, None, None, channels))
            output = keras.layers.Conv2D(self.out_channels, 3, padding="same", use_bias=use_bias,
                                         name=f"{name}_output", **kw)
            output.build(out_shape)
            self.lateral.append(lateral)
            self.lateral_norm.append(self._norm(f"{name}_lateral_norm", out_shape))
            self.output_conv.append(output)
            self.output_norm.append(self._norm(f"{name}_output_norm", out_shape))
        self.built = True

    def _norm(self, name, shape):
        """ViTDet's channels-last LayerNorm (detectron2's "LN", epsilon 1e-6), or the identity without norms."""
        if self.norm is None:
            return keras.layers.Identity(name=name, dtype=self.dtype_policy)
        layer = LayerNorm(epsilon=1e-6, name=name, dtype=self.dtype_policy)
        layer.build(shape)
        return layer

    def base_map(self, images, training=False):
        """The last block's patch tokens (no CLS, no final norm) as a map (batch, h, w, hidden_dim), stride p."""
        tokens = self.encoder.intermediate_features(images, [-1], training=training)[0]  # [B, 1 + h * w, D]
        h, w = self.encoder.grid_size
        return ops.reshape(tokens[:, 1:], (-1, h, w, self.encoder.hidden_dim))  # row-major, as the patch order

    def call(self, images, training=False):
        x = self.base_map(images, training=training)  # [B, h, w, D]
        scaled = (
            self.p2_up2(ops.gelu(self.p2_norm(self.p2_up1(x)), approximate=False)),  # [B, 4h, 4w, D/4]
            self.p3_up(x),  # [B, 2h, 2w, D/2]
            x,  # [B, h, w, D]
            self.p5_pool(x),  # [B, h/2, w/2, D]
        )
        outputs = {}
        for i, (level, y) in enumerate(zip(LEVELS, scaled)):
            y = self.lateral_norm[i](self.lateral[i](y))
            outputs[level] = self.output_norm[i](self.output_conv[i](y))  # [B, ., ., out_channels]
        return outputs

    def compute_output_shape(self, input_shape):
        h, w = self.encoder.grid_size
        return {level: (input_shape[0], int(h * s), int(w * s), self.out_channels)
                for level, s in zip(LEVELS, SCALE_FACTORS)}

    def get_config(self):
        return {**super().get_config(), **init_arguments(self),
                "encoder": keras.saving.serialize_keras_object(self.encoder)}
