"""Weights in and out of the official facebookresearch/mae layout."""

from keras_mae.checkpoints.official import export_official_weights, load_official_weights, official_variables
