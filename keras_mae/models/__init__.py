"""keras_mae models."""

from keras_mae.models.linear_probe import LinearProbe
from keras_mae.models.mae_decoder import MAEDecoder
from keras_mae.models.masked_autoencoder import MaskedAutoencoder
from keras_mae.models.mlp_probe import MLPProbe
from keras_mae.models.presets import PRESETS
from keras_mae.models.simple_feature_pyramid import SimpleFeaturePyramid
from keras_mae.models.vit_classifier import ViTClassifier
from keras_mae.models.vit_encoder import ViTEncoder
