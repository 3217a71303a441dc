"""A prepared TensorFlow Datasets dataset (`tfds:NAME[:SPLIT]`) as a `Source`.

Nothing is downloaded here: an unprepared dataset is a clear error telling
how to prepare it. Implicit downloads would be a surprise of hundreds of GB
for ImageNet (which anyway needs a manual download) and a hang offline.
"""

import re

import tensorflow as tf

from keras_mae.data.base import (
    Source,
    check_num_channels,
    convert_channels,
)
from keras_mae.data.augment import crop_to_box
from keras_mae.data.builtin import DATASET_STATS
from keras_mae.data.jpeg_window import decode_jpeg_window, jpeg_size
from keras_mae.data.normalization import IMAGENET_MEAN, IMAGENET_STD


def parse_tfds_name(name, split):
    """Splits `NAME[:SPLIT]` into (name, split); `NAME:1.2.3` is a version, not a split.

    Args:
        name: str. Text after `tfds:`, e.g. `imagenet2012`, `cifar10:test`,
            `mnist:3.0.1`, `mnist:3.*.*:test`.
        split: str. Split used when `name` has none.

    Returns:
        (builder name, split).
    """
    head, sep, tail = name.rpartition(":")
    if sep and not re.fullmatch(r"[\d.*]+", tail):
        return head, tail
    return name, split


def _resolve_split(split, splits):
    """ImageNet-style datasets call their test split "validation": use it for "test"."""
    if split not in splits and split == "test" and "validation" in splits:
        return "validation"
    return split


def _prepared_builder(name, data_dir):
    """The TFDS builder of `name`, checked to exist and to be prepared (nothing is downloaded)."""
    import tensorflow_datasets as tfds  # Imported here: only TFDS users pay for it.

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown TFDS dataset {name!r}; see https://www.tensorflow.org/datasets/catalog."
        ) from None
    if not builder.is_prepared():
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}; prepare it first "
            f"(`tfds build {name} --data_dir=DIR`; ImageNet needs its archives in "
            "DIR/downloads/manual) and pass data_dir=DIR."
        )
    return builder


def tfds_split_names(name, data_dir=None):
    """The split names of a prepared TFDS dataset (`NAME` or `NAME:VERSION`, without `tfds:`)."""
    return list(_prepared_builder(name, data_dir).info.splits)


def load_tfds(name, split="train", data_dir=None, num_channels=None, shuffle_files=None):
    """Loads a prepared TFDS dataset as a `Source`.

    Args:
        name: str. `NAME`, `NAME:SPLIT` or `NAME:VERSION:SPLIT` (without `tfds:`).
        split: str. Split when `name` has none; "test" falls back to "validation".
            TFDS slices work too (`train[:90%]`, `train[54000:]`).
        data_dir: str or None. Where the dataset was prepared; None is TFDS's
            default (`~/tensorflow_datasets` or `$TFDS_DATA_DIR`).
        num_channels: int or None. Channels to convert to; None keeps the dataset's.
        shuffle_files: bool or None. Read the files in a (fixed-seed) shuffled
            order; None does so for splits named "train...".

    Returns:
        `Source`; mean/std are the known ones for mnist, fashion_mnist, cifar10
        and cifar100, ImageNet's otherwise. Where the image feature holds
        JPEGs (`encoding_format="jpeg"`, as `imagenet2012`), pretraining
        decodes only each image's crop window (`crop_decode_fn`).
    """
    import tensorflow_datasets as tfds  # Imported here: only TFDS users pay for it.

    check_num_channels(num_channels, allow_none=True)
    name, split = parse_tfds_name(name, split)
    builder = _prepared_builder(name, data_dir)
    split = _resolve_split(split, builder.info.splits)
    features = builder.info.features
    image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    label_keys = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not image_keys:
        raise ValueError(f"TFDS dataset {name!r} has no image feature.")
    image_key, label_key = image_keys[0], (label_keys[0] if label_keys else None)
    image_feature = features[image_key]
    if image_feature.dtype != tf.uint8:
        raise ValueError(f"TFDS dataset {name!r} has {image_feature.dtype} images; need uint8.")
    own_channels = image_feature.shape[-1] or 3
    num_channels = num_channels or own_channels
    try:
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError):
        raise ValueError(
            f"TFDS dataset {name!r} has no split {split!r}; it has {list(builder.info.splits)}."
        ) from None

    # Encoded bytes are the keys: shuffling them before decoding keeps the
    # shuffle buffer small. Files are shuffled for training, with a fixed seed
    # so pipelines stay reproducible.
    records = builder.as_dataset(
        split=split,
        shuffle_files=split.startswith("train") if shuffle_files is None else shuffle_files,
        decoders={image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=0),
    )
    keys = records.map(
        lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32) if label_key else -1)
    )

    def decode_whole(encoded):
        if image_feature.shape[-1] is None:  # Channels unknown: let the decoder make RGB.
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        else:
            image = image_feature.decode_example(encoded)
        image.set_shape([None, None, own_channels])
        return image

    def decode(encoded, label):
        return convert_channels(decode_whole(encoded), num_channels), label

    def decode_crop(key, tag, crop_box):
        encoded, label = key

        def window():  # TFDS decodes with TensorFlow's default inverse DCT: INTEGER_FAST, the same pixels here.
            height, width = jpeg_size(encoded)
            return decode_jpeg_window(encoded, crop_box(height, width, tag), own_channels, width, "INTEGER_FAST")

        def whole():  # A PNG (or other) record: decoded whole, then cut.
            image = decode_whole(encoded)
            return crop_to_box(image, crop_box(tf.shape(image)[0], tf.shape(image)[1], tag))

        image = tf.cond(tf.io.is_jpeg(encoded), window, whole)
        image.set_shape([None, None, own_channels])
        return convert_channels(image, num_channels), label, tag

    # JPEG records (ImageNet's) are decoded only inside their crop window (jpeg_window.py); the header is in the
    # record, so its size costs no file read. PNG datasets gain nothing from a window.
    window_decodable = getattr(image_feature, "encoding_format", None) == "jpeg" and own_channels in (1, 3)

    mean, std = DATASET_STATS.get(name.split(":")[0].split("/")[0], (IMAGENET_MEAN, IMAGENET_STD))
    return Source(
        num_examples=num_examples,
        num_classes=features[label_key].num_classes if label_key else None,
        num_channels=num_channels,
        mean=mean,
        std=std,
        name=f"tfds:{name}:{split}",
        keys=keys,
        decode_fn=lambda ds: ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE),
        crop_decode_fn=(lambda keyed, crop_box: keyed.map(lambda key, tag: decode_crop(key, tag, crop_box),
                                                          num_parallel_calls=tf.data.AUTOTUNE))
        if window_decodable else None,
        class_names=tuple(features[label_key].names) if label_key else None,
    )
