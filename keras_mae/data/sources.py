"""`load_source`: one entry point from a data spec to a `Source`.

A spec is a builtin name (fashion_mnist, mnist, cifar10, cifar100), `tfds:NAME`,
a folder of images, a `.npz` file, a numpy array or an `(images, labels)` pair.
"""

import os

import numpy as np

from keras_mae.data.base import Source, check_num_channels, source_from_arrays, with_channels
from keras_mae.data.builtin import BUILTIN_NAMES, load_builtin
from keras_mae.data.image_folder import load_image_folder
from keras_mae.data.tfds_source import load_tfds

_KINDS = f"a folder of images, a .npz file, tfds:NAME or one of {', '.join(BUILTIN_NAMES)}"
# (images key, labels key) tried in order; `{split}` is the requested split.
_NPZ_KEYS = (("x", "y"), ("images", "labels"), ("x_{split}", "y_{split}"))


def load_npz(path, split="train", num_channels=None):
    """Loads images (and labels) from a `.npz` file.

    Args:
        path: str. File with `x` or `images` (and optionally `y` / `labels`), or
            keras-style `x_train`, `y_train`, `x_test`, `y_test`.
        split: str. Picks `x_{split}` / `y_{split}` in keras-style files.
        num_channels: int or None. Channels to convert to; None keeps the file's.

    Returns:
        `Source` with ImageNet's mean/std.
    """
    with np.load(path, allow_pickle=False) as data:
        for images_key, labels_key in _NPZ_KEYS:
            images_key, labels_key = images_key.format(split=split), labels_key.format(split=split)
            if images_key in data.files:
                labels = data[labels_key] if labels_key in data.files else None
                name = f"{path}:{images_key}"
                return source_from_arrays(data[images_key], labels, num_channels, name=name)
        raise ValueError(
            f"No image array for split {split!r} in '{path}' (keys: {', '.join(data.files)}); "
            f"expected 'x' or 'images' (with 'y' or 'labels'), or 'x_{split}' (with 'y_{split}')."
        )


def load_source(spec, split="train", data_dir=None, num_channels=None):
    """Turns a data spec into a `Source` of uint8 images and int32 labels.

    Args:
        spec: one of: "fashion_mnist", "mnist", "cifar10", "cifar100";
            "tfds:NAME" or "tfds:NAME:SPLIT"; a path to a folder of images
            (class subfolders optional) or to a `.npz` file; a numpy array
            `(N, H, W[, C])`; an `(images, labels)` pair; a `Source`.
        split: str. "train" or "test" for builtin datasets and keras-style
            `.npz` files; any TFDS split. Ignored for folders and arrays:
            point at the split's own folder or array.
        data_dir: str or None. TFDS data directory (where ImageNet was prepared).
        num_channels: int or None. 1, 3 or 4 to convert every image to; None
            keeps the data's own (3 for folders).

    Returns:
        `Source`.

    >>> import numpy as np
    >>> source = load_source(np.zeros((4, 8, 8), np.uint8), num_channels=3)
    >>> source.num_examples, source.num_channels, source.num_classes
    (4, 3, None)
    """
    check_num_channels(num_channels, allow_none=True)
    if isinstance(spec, Source):
        return with_channels(spec, num_channels)
    if isinstance(spec, np.ndarray):
        return source_from_arrays(spec, None, num_channels)
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return source_from_arrays(spec[0], spec[1], num_channels)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise ValueError(f"Unsupported data spec of type {type(spec).__name__}; pass {_KINDS}.")
    if spec.startswith("tfds:"):
        return load_tfds(spec[len("tfds:") :], split, data_dir, num_channels)
    name = spec.lower().replace("-", "_")
    if name in BUILTIN_NAMES:
        return load_builtin(name, split, num_channels)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        return load_image_folder(path, num_channels)
    if os.path.isfile(path):
        if path.lower().endswith(".npz"):
            return load_npz(path, split, num_channels)
        raise ValueError(f"Data path '{spec}' is not a folder or a .npz file; pass {_KINDS}.")
    if os.sep not in spec and "." not in spec:  # A bare word: a dataset name, not a path.
        raise ValueError(f"Unknown dataset '{spec}'; pass {_KINDS}.")
    raise ValueError(f"Data path '{spec}' does not exist; pass {_KINDS}.")
