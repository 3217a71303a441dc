"""Small classic datasets by name: fashion_mnist, mnist, cifar10, cifar100.

Fashion-MNIST is read from the Debian package `fashion-mnist` when installed
(`/usr/share/datasets/fashion-mnist/`, IDX files), so it works offline;
otherwise, and for the others, `keras.datasets.<name>.load_data()` is used,
which downloads to `~/.keras/datasets` the first time.
"""

import gzip
import os
import struct

import numpy as np

from keras_mae.data.base import source_from_arrays

# (mean, std) per channel in [0, 1] units, over the training split.
DATASET_STATS = {
    # Computed from the Debian IDX files: 0.28604, 0.35302.
    "fashion_mnist": ((0.2860,), (0.3530,)),
    # Well-known values (training images), as in the PyTorch examples.
    "mnist": ((0.1307,), (0.3081,)),
    # Well-known values (training images); the std is the per-pixel one, not
    # the often-quoted (0.2023, 0.1994, 0.2010), which is a std of means.
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
BUILTIN_NAMES = tuple(DATASET_STATS)
NUM_CLASSES = {"fashion_mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "mnist": tuple(str(digit) for digit in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
LOCAL_IDX_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX type byte -> numpy dtype; multi-byte values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Reads an IDX file (the MNIST format), gzipped or not.

    Format: two zero bytes, a type byte, a byte with the number of dimensions,
    one big-endian uint32 per dimension, then the data (http://yann.lecun.com/exdb/mnist/).

    Args:
        path: str. `.gz` files are decompressed.

    Returns:
        numpy array with the file's shape and dtype (uint8 for MNIST).
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}).")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, _IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    return array.reshape(shape).astype(array.dtype.newbyteorder("="))


def load_arrays(name, split):
    """Returns (images, labels) for `split` of the builtin dataset `name`."""
    local_dir = LOCAL_IDX_DIRS.get(name)
    if local_dir and all(os.path.exists(os.path.join(local_dir, f)) for f in _IDX_FILES[split]):
        return tuple(read_idx(os.path.join(local_dir, f)) for f in _IDX_FILES[split])
    import keras  # Imported here: only needed for the download fallback.

    train, test = getattr(keras.datasets, name).load_data()
    return train if split == "train" else test


def load_builtin(name, split="train", num_channels=None):
    """Loads one of `BUILTIN_NAMES` as a `Source`.

    Args:
        name: str. One of fashion_mnist, mnist, cifar10, cifar100.
        split: str. "train" (60,000 or 50,000 images) or "test" (10,000).
        num_channels: int or None. Channels to convert to; None keeps the
            dataset's own (1 for the MNISTs, 3 for the CIFARs).

    Returns:
        `Source` with the dataset's known mean/std.
    """
    if name not in DATASET_STATS:
        raise ValueError(f"Unknown builtin dataset {name!r}; use one of {', '.join(BUILTIN_NAMES)}.")
    if split not in _IDX_FILES:
        raise ValueError(f"Unknown split {split!r} for {name}; use 'train' or 'test'.")
    images, labels = load_arrays(name, split)
    mean, std = DATASET_STATS[name]
    source = source_from_arrays(
        images, labels, num_channels, name=f"{name}:{split}", mean=mean, std=std
    )
    source.num_classes = NUM_CLASSES[name]
    source.class_names = CLASS_NAMES.get(name)
    return source
