"""keras_mae: Masked Autoencoder pretraining of Vision Transformers in Keras 3."""

from keras_mae import checkpoints, interop, layers
from keras_mae.models import (MAEDecoder, MaskedAutoencoder, PRESETS, SimpleFeaturePyramid, ViTClassifier,
                               ViTEncoder)

__version__ = "0.1.0"
