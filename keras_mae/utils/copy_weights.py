"""Weights copied between two Keras models of the same architecture, by variable path."""

import numpy as np
from keras import ops

POSITION_TABLES = ("pos_embed", "decoder_pos_embed")


def _relative(variable, layer):
    prefix = f"{layer.path}/" if getattr(layer, "path", None) else ""
    return variable.path[len(prefix):] if prefix and variable.path.startswith(prefix) else variable.path


def _grid(model):
    return tuple(getattr(model, "encoder", model).grid_size)


def copy_weights(source, target):
    """Copies every weight of `source` into the weight of `target` at the same path, relative to each model.

    Position tables (`pos_embed`, `decoder_pos_embed`) of another patch grid are resized as the official
    `interpolate_pos_embed` (fixed sin-cos tables recomputed, learned ones resized bicubically), so `target`
    may be built at another image size. Weights `target` has and `source` lacks (a classifier's head, say)
    keep their initial values and are returned.

    Args:
        source: Keras model or layer (a `ViTEncoder`, `MaskedAutoencoder`, ...).
        target: Keras model or layer of the same architecture (`classifier.encoder` for a classifier).

    Returns:
        list of str: the paths of `target`'s weights that were not copied.

    >>> from keras_mae import ViTEncoder, ViTClassifier
    >>> encoder = ViTEncoder(8, 4, 1, hidden_dim=8, num_layers=1, num_heads=2, mlp_dim=16)
    >>> classifier = ViTClassifier(8, 4, 1, hidden_dim=8, num_layers=1, num_heads=2, mlp_dim=16, num_classes=2)
    >>> copy_weights(encoder, classifier.encoder)
    []
    """
    from keras_mae.checkpoints.pos_embed import resize_pos_embed

    weights = {_relative(w, source): w for w in source.weights}
    left = []
    for weight in target.weights:
        key = _relative(weight, target)
        if key not in weights:
            left.append(weight.path)
            continue
        value = ops.convert_to_numpy(weights[key])
        if key.split("/")[-1] in POSITION_TABLES and (value.shape != tuple(weight.shape)
                                                      or _grid(source) != _grid(target)):
            value = resize_pos_embed(value, _grid(target), _grid(source))
        if value.shape != tuple(weight.shape):
            raise ValueError(f"Weight {key} has shape {value.shape} in {source.name} and {tuple(weight.shape)} in "
                             f"{target.name}; copy between models of the same architecture.")
        weight.assign(np.asarray(value, weight.dtype))
    return left
