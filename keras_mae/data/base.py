"""The `Source` record every loader returns, and the helpers loaders share.

A source is one split of one dataset before any transform: uint8 HWC images with
int32 labels (-1 when unlabelled), plus the channel count and the per-channel
mean/std used to normalise it.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from keras_mae.data.sharding import shard_rows
from keras_mae.data.normalization import IMAGENET_MEAN, IMAGENET_STD, fit_normalization

VALID_CHANNELS = (1, 3, 4)


@dataclasses.dataclass
class Source:
    """Images and labels of one split, with what is needed to normalise them.

    Args:
        dataset: `tf.data.Dataset` of `(image, label)`: uint8 `[H, W, C]` and
            int32 scalar (-1 when unlabelled). Built from `keys` when omitted.
        num_examples: int or None. Number of examples (before unreadable files
            are dropped by a lazy check), None when unknown.
        num_classes: int or None. None when unlabelled.
        num_channels: int. C of every image: 1, 3 or 4.
        mean: tuple of `num_channels` floats. Per-channel mean in [0, 1] units.
        std: tuple of `num_channels` floats. Per-channel std in [0, 1] units.
        name: str. For logs.
        keys: `tf.data.Dataset` or None. Cheap records (file paths, indices,
            encoded bytes) that `decode_fn` turns into `dataset`. Pipelines
            shuffle these rather than decoded images, so a 10,000-example
            shuffle buffer costs megabytes, not gigabytes.
        decode_fn: callable or None. Maps a dataset of `keys` to a dataset of
            `(image, label)`; may drop elements (unreadable files).
        key_table: tuple of numpy arrays or None. The keys as columns, one row
            per example, `key_table[1]` the int32 labels: `keys` is
            `from_tensor_slices(key_table)`. Sources that have one (folders,
            arrays) can be split (`subset`) and relabelled (`relabel`).
        class_names: tuple of str or None. Name of each label.
        files: tuple of str or None. Each example's file path (folders), the
            identity that split overlap checks compare.
        crop_decode_fn: callable or None. Maps a dataset of `(key, tag)`
            (`key` one element of `keys`, `tag` any tensor) and a function
            `crop_box(height, width, tag) -> int32 [top, left, height, width]`
            to a dataset of `(the box's uint8 pixels, label, tag)`:
            `decode_fn` then a slice, decoding only the box where the format
            allows (JPEG, `jpeg_window.py`); may drop elements. Used by
            `cropped_examples`; None where decoding a window gains nothing.
    """

    dataset: Optional[tf.data.Dataset] = None
    num_examples: Optional[int] = None
    num_classes: Optional[int] = None
    num_channels: int = 3
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    name: str = "data"
    keys: Optional[tf.data.Dataset] = None
    decode_fn: Optional[Callable] = None
    key_table: Optional[tuple] = None
    class_names: Optional[tuple] = None
    files: Optional[tuple] = None
    crop_decode_fn: Optional[Callable] = None

    def __post_init__(self):
        check_num_channels(self.num_channels)
        self.mean, self.std = fit_normalization(self.mean, self.std, self.num_channels)
        if self.keys is None and self.key_table is not None:
            self.keys = tf.data.Dataset.from_tensor_slices(tuple(self.key_table))
        if self.dataset is None:
            if self.keys is None or self.decode_fn is None:
                raise ValueError("Source needs `dataset`, or both `keys` and `decode_fn`.")
            self.dataset = self.decode_fn(self.keys)

    def examples(self, shuffle_buffer=0, seed=None, repeat=1, skip=0, shard=None):
        """Returns `dataset`, shuffled at its cheapest point when asked.

        Args:
            shuffle_buffer: int. Shuffle buffer size; 0 or None for no shuffle.
            seed: int or None. Shuffle seed; each epoch reshuffles, deterministically.
            repeat: int. Passes over the data, each reshuffled; -1 repeats forever. Defaults to 1.
            skip: int or scalar tensor. Examples dropped from the start (after shuffling and repeating), before
                they are decoded: the part of an epoch a resumed run has already trained on. Defaults to 0.
            shard: `(index, count, batch_size)` or None. Keeps process `index`'s rows of every batch of
                `batch_size` (of `count` equal shares), before decoding: the process's share of each global
                batch (`sharding.shard_rows`). Counted from the stream's start, skipped examples included.

        Returns:
            `tf.data.Dataset` of `(uint8 image [H, W, C], int32 label)`.
        """
        by_key = self.keys is not None and self.decode_fn is not None
        examples = self._stream(self.keys if by_key else self.dataset, shuffle_buffer, seed, repeat, skip, shard)
        return self.decode_fn(examples) if by_key else examples

    @property
    def can_crop_decode(self):
        """Whether `cropped_examples` can decode only each example's crop window."""
        return self.crop_decode_fn is not None and self.keys is not None

    def cropped_examples(self, tags, crop_box, shuffle_buffer=0, seed=None, repeat=1, skip=0, shard=None):
        """`examples`, each cut to its crop box while it is decoded (only the window is decoded; see `crop_decode_fn`).

        Gives what `examples` then a crop gives, when the stream drops nothing: the example at stream position p
        (counted from the stream's start, skipped examples included) gets element p of `tags` (a seed, or the
        position itself), its box is `crop_box(height, width, tag)`, and the pixels are the full decode's.

        Args:
            tags: `tf.data.Dataset`, one element per stream position from position 0; the stream ends with it.
            crop_box: callable `(height, width, tag) -> int32 [4]` (top, left, height, width).
            shuffle_buffer, seed, repeat, skip, shard: as `examples`.

        Returns:
            `tf.data.Dataset` of `(uint8 crop [h, w, C], int32 label, tag)`.
        """
        if not self.can_crop_decode:
            raise ValueError(f"{self.name} cannot decode crop windows (it has no crop_decode_fn); use examples().")
        keyed = tf.data.Dataset.zip(self._stream(self.keys, shuffle_buffer, seed, repeat), tags)
        return self.crop_decode_fn(self._stream(keyed, skip=skip, shard=shard), crop_box)

    @staticmethod
    def _stream(examples, shuffle_buffer=0, seed=None, repeat=1, skip=0, shard=None):
        """`examples` shuffled, repeated, skipped and sharded, in that order (see `examples`)."""
        if shuffle_buffer:
            examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat != 1:
            examples = examples.repeat(repeat)
        if not (isinstance(skip, int) and skip == 0):
            examples = examples.skip(skip)
        if shard is not None:
            examples = shard_rows(examples, *shard, start=skip)
        return examples

    @property
    def labels(self):
        """int32 numpy array (num_examples,) of the labels, or None when only reading the data would tell."""
        return None if self.key_table is None else np.asarray(self.key_table[1])

    def subset(self, indices, name=None):
        """The examples at `indices` (positions in this source), in that order, as a new `Source`.

        Args:
            indices: sequence of ints in `[0, num_examples)`.
            name: str or None. The new source's name; defaults to this one's.

        Returns:
            `Source` sharing this one's decoding, classes and statistics.
        """
        if self.key_table is None:
            raise ValueError(f"{self.name} cannot be split by example (it has no key table).")
        indices = np.asarray(indices, np.int64).reshape(-1)
        table = tuple(np.asarray(column)[indices] for column in self.key_table)
        files = None if self.files is None else tuple(self.files[i] for i in indices)
        return dataclasses.replace(self, dataset=None, keys=None, key_table=table, files=files,
                                   num_examples=len(indices), name=name or self.name)

    def relabel(self, labels):
        """This source with `labels` (int array, one per example) in place of its own, e.g. example ids."""
        if self.key_table is None:
            raise ValueError(f"{self.name} cannot be relabelled (it has no key table).")
        table = list(self.key_table)
        table[1] = np.asarray(labels, np.int32).reshape(-1)
        if len(table[1]) != len(table[0]):
            raise ValueError(f"{self.name} has {len(table[0])} examples; received {len(table[1])} labels.")
        return dataclasses.replace(self, dataset=None, keys=None, key_table=tuple(table))


def check_num_channels(num_channels, allow_none=False):
    """Raises a one-line ValueError unless `num_channels` is 1, 3 or 4 (or None if allowed)."""
    if num_channels is None and allow_none:
        return
    if isinstance(num_channels, bool) or num_channels not in VALID_CHANNELS:
        raise ValueError(
            "num_channels must be 1 (grayscale), 3 (RGB) or 4 (RGBA). "
            f"Received: num_channels={num_channels!r}"
        )


def convert_channels(image, num_channels):
    """Converts a uint8 `[H, W, C]` tensor with C in (1, 3, 4) to `num_channels`.

    Uses the same rules as Pillow's `convert`: luma (ITU-R 601-2) for grey,
    repetition for RGB from grey, opaque alpha added, alpha dropped.

    Args:
        image: uint8 tensor `[H, W, C]` with a static C.
        num_channels: int. 1, 3 or 4.

    Returns:
        uint8 tensor `[H, W, num_channels]`.
    """
    channels = image.shape[-1]
    if channels == num_channels:
        return image
    if channels == 1:
        rgb = tf.repeat(image, 3, axis=-1)
    else:
        rgb = image[..., :3]
    if num_channels == 1:
        return tf.image.rgb_to_grayscale(rgb)
    if num_channels == 3:
        return rgb
    return tf.concat([rgb, tf.fill(tf.shape(rgb[..., :1]), tf.constant(255, tf.uint8))], -1)


def with_channels(source, num_channels):
    """Returns `source` converted to `num_channels` (itself when None or unchanged)."""
    if num_channels is None or num_channels == source.num_channels:
        return source
    check_num_channels(num_channels)
    convert = lambda image, label: (convert_channels(image, num_channels), label)
    mean, std = fit_normalization(source.mean, source.std, num_channels)
    common = dict(num_channels=num_channels, mean=mean, std=std)
    if source.keys is not None and source.decode_fn is not None:
        decode_fn, crop_decode_fn = source.decode_fn, source.crop_decode_fn
        convert_crop = lambda image, label, tag: (convert_channels(image, num_channels), label, tag)
        return dataclasses.replace(
            source,
            dataset=None,
            decode_fn=lambda keys: decode_fn(keys).map(convert, tf.data.AUTOTUNE),
            crop_decode_fn=crop_decode_fn and (
                lambda keyed, crop_box: crop_decode_fn(keyed, crop_box).map(convert_crop, tf.data.AUTOTUNE)),
            **common,
        )
    return dataclasses.replace(
        source, dataset=source.dataset.map(convert, tf.data.AUTOTUNE), crop_decode_fn=None, **common
    )


def _to_uint8(images):
    """uint8 as is; floats in [0, 1] or [0, 255] scaled and rounded; ints in [0, 255] cast."""
    if images.dtype == np.uint8:
        return images
    if images.size == 0:
        return images.astype(np.uint8)
    low, high = images.min(), images.max()
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite([low, high]).all() or low < 0 or high > 255:
            raise ValueError(
                f"Float images must be in [0, 1] or [0, 255]. Received range [{low}, {high}]."
            )
        scale = 255.0 if high <= 1.0 else 1.0
        return np.clip(np.rint(images * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer) or images.dtype == np.bool_:
        if low < 0 or high > 255:
            raise ValueError(
                f"Integer images must be in [0, 255]. Received range [{low}, {high}]."
            )
        return images.astype(np.uint8)
    raise ValueError(f"Unsupported image dtype {images.dtype}; use uint8 or float.")


def source_from_arrays(images, labels=None, num_channels=None, name="array", mean=None, std=None):
    """Builds a `Source` from in-memory arrays.

    Args:
        images: array `(N, H, W)` or `(N, H, W, C)` with C in (1, 3, 4); uint8,
            or float in [0, 1] or [0, 255].
        labels: array `(N,)` (or `(N, 1)`) of ints, or None for unlabelled.
        num_channels: int or None. Channels to convert to; None keeps C.
        name: str. For logs.
        mean: sequence or None. Per-channel mean; None uses ImageNet's.
        std: sequence or None. Per-channel std; None uses ImageNet's.

    Returns:
        `Source`.
    """
    check_num_channels(num_channels, allow_none=True)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in VALID_CHANNELS:
        raise ValueError(
            "Images must have shape (N, H, W) or (N, H, W, C) with C in (1, 3, 4). "
            f"Received: shape={images.shape}"
        )
    images = _to_uint8(images)
    if labels is None:
        labels = np.full(len(images), -1, np.int32)
        num_classes = None
    else:
        labels = np.asarray(labels).reshape(-1).astype(np.int32)
        if len(labels) != len(images):
            raise ValueError(f"Got {len(images)} images but {len(labels)} labels.")
        num_classes = int(labels.max()) + 1 if len(labels) else None
    images_t = tf.constant(images)

    def decode_fn(keys):
        # Gathering by index keeps the shuffle buffer to a list of integers.
        return keys.map(lambda i, label: (tf.gather(images_t, i), label), tf.data.AUTOTUNE)

    source = Source(
        num_examples=len(images),
        num_classes=num_classes,
        num_channels=images.shape[-1],
        mean=IMAGENET_MEAN if mean is None else mean,
        std=IMAGENET_STD if std is None else std,
        name=name,
        key_table=(np.arange(len(images), dtype=np.int64), labels),
        decode_fn=decode_fn,
    )
    source = with_channels(source, num_channels)
    if mean is None:  # Grey shown as RGB is normalised as RGB: ImageNet's 3 values, not their mean.
        source.mean, source.std = fit_normalization(IMAGENET_MEAN, IMAGENET_STD, source.num_channels)
    return source
