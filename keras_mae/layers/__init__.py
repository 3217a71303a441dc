"""Building blocks of the Masked Autoencoder."""

from keras_mae.layers.attention import attention
from keras_mae.layers.batch_gather import batch_gather
from keras_mae.layers.drop_path import DropPath
from keras_mae.layers.gelu import gelu
from keras_mae.layers.layer_norm import LayerNorm
from keras_mae.layers.patch_embedding import PatchEmbedding
from keras_mae.layers.patching import patchify, unpatchify
from keras_mae.layers.pixel_normalization import normalize_pixels
from keras_mae.layers.position_embedding import sincos_position_embedding
from keras_mae.layers.random_masking import RandomMasking
from keras_mae.layers.token_dense import TokenDense
from keras_mae.layers.transformer_block import TransformerBlock
