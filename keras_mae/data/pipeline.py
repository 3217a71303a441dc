"""Batched tf.data pipelines for `model.fit` / `model.evaluate` on any Keras backend.

tf.data runs on TensorFlow whatever `KERAS_BACKEND` is; Keras converts each
batch to the backend's arrays. Every element gets its own stateless seed, so
a pipeline is reproducible from `seed` alone (whatever the parallelism) and
still draws new crops each epoch. Given `steps_per_epoch`, the pretraining
pipeline is indexed by epoch: epoch e's order and crops depend only on
`(seed, e)`, so a run resumed at epoch e sees the batches an uninterrupted
run would.
"""

import random

import tensorflow as tf

# `augment` is also an argument of make_pretrain_dataset.
from keras_mae.data import augment as augment_lib
from keras_mae.data import normalization
from keras_mae.data import sharding
from keras_mae.data.autotune import autotune_where_it_pays, without_autotune
from keras_mae.data.sharding import check_shard, shard_rows
from keras_mae.data.sources import load_source


def _image_size(image_size):
    """int or (height, width) -> (height, width), validated."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(
            f"image_size must be a positive int or (height, width). Received: image_size={image_size!r}"
        )
    return size


def _prepare(spec_or_source, image_size, batch_size, num_channels, split, data_dir, mean, std, normalize):
    """Loads the source and resolves size and statistics shared by both pipelines."""
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True (float32 model inputs) or False (uint8 pixels). "
                         f"Received: normalize={normalize!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    size = _image_size(image_size)
    source = load_source(spec_or_source, split, data_dir, num_channels)
    channels = source.num_channels
    mean, std = normalization.fit_normalization(source.mean if mean is None else mean,
                                                source.std if std is None else std, channels)
    return source, size, mean, std


def _model_input(image, shape, mean, std, normalize):
    """A transformed image (float32, whole values in [0, 255]) as the pipeline yields it: normalised float32, or
    uint8 pixels for a model that normalises them itself. The static shape is set again: crops lose the channel
    count, which jit-compiled steps (and the fast normalize) need."""
    image = tf.ensure_shape(image, shape)
    return normalization.normalize(image, mean, std) if normalize else tf.cast(image, tf.uint8)


def _batch(examples, batch_size, with_labels, drop_remainder):
    """Batches, optionally drops the labels, and prefetches."""
    examples = examples.batch(batch_size, drop_remainder=drop_remainder,
                              num_parallel_calls=tf.data.AUTOTUNE)
    if not with_labels:
        examples = examples.map(lambda images, labels: images)
    return examples.prefetch(tf.data.AUTOTUNE)


def make_pretrain_dataset(spec_or_source, image_size, batch_size, num_channels=None, seed=0,
                          augment=True, with_labels=False, split="train", data_dir=None,
                          shuffle_buffer=10000, drop_remainder=True, mean=None, std=None,
                          steps_per_epoch=None, initial_epoch=0, initial_step=0, shard=None, normalize=True):
    """Builds the MAE pretraining input: shuffled, augmented, normalised batches.

    Augmentation follows facebookresearch/mae `main_pretrain.py`: random resized
    crop (scale 0.2-1, ratio 3/4-4/3, bicubic, rounded to whole pixels as
    Pillow's) and horizontal flip, then `(x / 255 - mean) / std`, or with
    `normalize=False` the uint8 pixels, for a `MaskedAutoencoder` to
    normalise on its device (the same model inputs, a quarter of the bytes,
    and the host's share of the work lighter).
    JPEGs of an image folder are decoded only inside their crop box
    (`jpeg_window.py`), with the pixels, and so the batches, of a full decode.

    Args:
        spec_or_source: a `Source` or any spec `load_source` accepts.
        image_size: int or (height, width). Output image size.
        batch_size: int. Images per batch.
        num_channels: int or None. 1, 3 or 4; None keeps the data's own.
        seed: int or None. Seeds the shuffle and the augmentation; None is
            not reproducible. Defaults to 0.
        augment: bool. False uses the evaluation resize + centre crop instead.
        with_labels: bool. Yield `(images, labels)` rather than images alone.
        split: str. See `load_source`. Defaults to "train".
        data_dir: str or None. TFDS data directory.
        shuffle_buffer: int. Shuffle buffer size; 0 disables shuffling.
        drop_remainder: bool. Drop the last incomplete batch (static shapes for jit).
        mean: sequence or None. Per-channel mean in [0, 1] units; None uses the source's.
        std: sequence or None. Per-channel std in [0, 1] units; None uses the source's.
        steps_per_epoch: int or None. None: one pass over the data per
            iteration of the dataset, reshuffled and re-cropped on each (`fit`
            iterates once per epoch); reproducible within one process only.
            An int: an endless dataset of epochs of exactly this many full
            batches (pass the same value to `fit`); epoch e is shuffled and
            cropped from `(seed, e)` alone, so a run resumed with
            `fit(initial_epoch=e)` gets the batches of an uninterrupted one.
            Each epoch starts a fresh shuffle, and tops up from a reshuffle if
            the data runs short. Defaults to None.
        initial_epoch: int. The first epoch produced, with `steps_per_epoch`:
            the epoch a resumed `fit` starts at. Defaults to 0.
        initial_step: int. Batches of `initial_epoch` already trained on (a
            run resumed from a checkpoint written inside an epoch): the
            dataset starts at that epoch's next batch, exactly as an
            uninterrupted run would have gone on; the skipped images are not
            decoded. Needs `steps_per_epoch`. Defaults to 0.
        shard: `(index, count)` or None. Data parallelism over `count`
            processes (`keras_mae.distribution.data_shard()`): `batch_size`
            is the global batch, and this process gets rows `[index * b,
            (index + 1) * b)` of each, `b = batch_size / count`, with the
            crops one process would draw; the other rows are never decoded.
            Needs `steps_per_epoch`. Defaults to None (all rows).
        normalize: bool. False yields uint8 pixels instead of normalised
            float32 images (mean and std then only check the channels): for
            `MaskedAutoencoder(mean=..., std=...)`, which normalises uint8
            input in its step. Defaults to True.

    Returns:
        `tf.data.Dataset` of float32 (uint8 without `normalize`) `[batch,
        height, width, C]`, or of `(images, int32 labels [batch])` with
        labels -1 when unlabelled (`batch` is `batch_size / count` with a
        shard). tf.data's autotuning is off where the process has at most
        16 CPUs (`keras_mae/data/autotune.py`).

    >>> import numpy as np
    >>> ds = make_pretrain_dataset(np.zeros((8, 12, 12), np.uint8), 8, batch_size=4)
    >>> next(iter(ds)).shape
    TensorShape([4, 8, 8, 1])
    """
    source, size, mean, std = _prepare(
        spec_or_source, image_size, batch_size, num_channels, split, data_dir, mean, std, normalize
    )
    shape = (*size, source.num_channels)

    def transform(example, example_seed):
        image, label = example
        if augment:
            crop_seed, flip_seed = _crop_and_flip_seeds(example_seed)
            image = augment_lib.random_resized_crop(image, size, crop_seed)
            image = augment_lib.random_flip(image, flip_seed)
        else:
            image = augment_lib.resize_center_crop(image, size)
        return _model_input(image, shape, mean, std, normalize), label

    # Sources that can decode only the crop's window (JPEG folders) get the same boxes, seeds and pixels that way.
    # `example_seed` maps each stream position's tag (see `Source.cropped_examples`) to the example's seed.
    def cropped(example_seed):
        def crop_box(height, width, tag):
            return augment_lib.sample_crop_box(height, width, _crop_and_flip_seeds(example_seed(tag))[0])

        def cropped_transform(crop, label, tag):
            flip_seed = _crop_and_flip_seeds(example_seed(tag))[1]
            image = augment_lib.random_flip(augment_lib.resize(crop, size), flip_seed)
            return _model_input(image, shape, mean, std, normalize), label

        return crop_box, cropped_transform

    if not (augment and source.can_crop_decode):
        cropped = None

    shard = check_shard(shard, batch_size)
    if steps_per_epoch is None:
        if initial_epoch or initial_step or shard[1] > 1:
            raise ValueError("initial_epoch, initial_step and shard need steps_per_epoch. Received: "
                             f"initial_epoch={initial_epoch!r}, initial_step={initial_step!r}, shard={shard!r}")
        base = tf.constant(seed or 0, tf.int64)
        noises = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        example_seed = lambda noise: tf.stack([base, noise])
        if cropped:
            crop_box, cropped_transform = cropped(example_seed)
            examples = source.cropped_examples(noises, crop_box, shuffle_buffer, seed)
            examples = examples.map(cropped_transform, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            examples = tf.data.Dataset.zip((source.examples(shuffle_buffer, seed), noises))
            examples = examples.map(lambda example, noise: transform(example, example_seed(noise)),
                                    num_parallel_calls=tf.data.AUTOTUNE)
        return autotune_where_it_pays(_batch(examples, batch_size, with_labels, drop_remainder))
    return _epochs(source, transform, batch_size, with_labels, shuffle_buffer, steps_per_epoch, initial_epoch,
                   initial_step, random.randrange(2**31) if seed is None else seed, shard, cropped)


def _crop_and_flip_seeds(example_seed):
    """An example's seed -> (its crop's seed, its flip's seed)."""
    return tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))


def _epochs(source, transform, batch_size, with_labels, shuffle_buffer, steps_per_epoch, initial_epoch, initial_step,
            seed, shard, cropped=None):
    """The endless, epoch-indexed pretraining pipeline: epoch e depends on (seed, e) only.

    `cropped`: where the source decodes crop windows, a function of the tag-to-seed map giving `(crop_box,
    cropped_transform)`; else None."""
    for name, value, low in (("steps_per_epoch", steps_per_epoch, 1), ("initial_epoch", initial_epoch, 0),
                             ("initial_step", initial_step, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}. Received: {name}={value!r}")
    if initial_step >= steps_per_epoch:
        raise ValueError(f"initial_step must be < steps_per_epoch={steps_per_epoch} (a whole epoch is the next "
                         f"initial_epoch). Received: initial_step={initial_step}")
    index, count = shard
    needed = steps_per_epoch * batch_size
    # Enough passes to fill an epoch even after files dropped while reading; bounded, so
    # a source that yields nothing ends the data (fit says so) rather than spinning.
    passes = -(-needed // source.num_examples) + 1 if source.num_examples else -1

    def epoch_batches(epoch):
        # Fixes this function graph's seed (not TensorFlow's global one), so the shuffle depends on
        # (seed, epoch) alone; a global seed of 0 would also break the tensor shuffle seed.
        tf.compat.v1.set_random_seed(1)
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        shuffle_seed = tf.random.stateless_uniform([], epoch_seed, minval=None, maxval=None, dtype=tf.int64)
        # A resumed epoch starts after the images already trained on; each image keeps its index, hence its crop.
        skipped = tf.constant(initial_step * batch_size, tf.int64)
        start = tf.where(epoch == initial_epoch, skipped, tf.zeros_like(skipped))
        stream = dict(shuffle_buffer=shuffle_buffer, seed=shuffle_seed, repeat=passes, skip=start,
                      shard=(index, count, batch_size))
        example_seed = lambda i: tf.random.experimental.stateless_fold_in(epoch_seed, i)
        if cropped:  # each image's index enters before decoding, as its stream position: skipped and sharded alike
            crop_box, cropped_transform = cropped(example_seed)
            examples = source.cropped_examples(tf.data.Dataset.range(needed), crop_box, **stream)
            examples = examples.map(cropped_transform, num_parallel_calls=tf.data.AUTOTUNE)
        else:  # each image's index in the epoch seeds its crop; a shard keeps its rows of both streams, undecoded
            indices = shard_rows(tf.data.Dataset.range(start, needed), index, count, batch_size, start=start)
            examples = tf.data.Dataset.zip(indices, source.examples(**stream))
            examples = examples.map(lambda i, example: transform(example, example_seed(i)),
                                    num_parallel_calls=tf.data.AUTOTUNE)
        return examples.batch(batch_size // count, drop_remainder=True)

    batches = tf.data.Dataset.range(initial_epoch, 2**62).flat_map(epoch_batches)
    if not with_labels:
        batches = batches.map(lambda images, labels: images)
    return autotune_where_it_pays(batches.prefetch(tf.data.AUTOTUNE))


def make_eval_dataset(spec_or_source, image_size, batch_size, num_channels=None, split="test",
                      with_labels=True, data_dir=None, mean=None, std=None, shard=None, normalize=True):
    """Builds the evaluation input: every example once, in order, resized and centre-cropped.

    Args:
        spec_or_source: a `Source` or any spec `load_source` accepts.
        image_size: int or (height, width). Output image size.
        batch_size: int. Images per batch; the last batch may be smaller.
        num_channels: int or None. 1, 3 or 4; None keeps the data's own.
        split: str. See `load_source`. Defaults to "test".
        with_labels: bool. Yield `(images, labels)` rather than images alone.
        data_dir: str or None. TFDS data directory.
        mean: sequence or None. Per-channel mean in [0, 1] units; None uses the source's.
        std: sequence or None. Per-channel std in [0, 1] units; None uses the source's.
        shard: `(index, count)` or None. This process's rows of each batch
            of `batch_size` (see `make_pretrain_dataset`); of the last,
            partial batch, the rows that exist, so the processes together
            evaluate every image once (the MAE's masks are one process's
            only when every batch is whole).
        normalize: bool. False yields uint8 pixels (see
            `make_pretrain_dataset`). Defaults to True.

    Returns:
        `tf.data.Dataset` of `(float32 images [batch, height, width, C], int32
        labels [batch])` (uint8 images without `normalize`), or images alone,
        with tf.data's autotuning off (`keras_mae.data.without_autotune`: each pass
        ends without waiting for its tuning thread).
    """
    source, size, mean, std = _prepare(
        spec_or_source, image_size, batch_size, num_channels, split, data_dir, mean, std, normalize
    )

    index, count = check_shard(shard, batch_size)

    def transform(image, label):
        image = augment_lib.resize_center_crop(image, size)
        return _model_input(image, (*size, source.num_channels), mean, std, normalize), label

    examples = source.examples(shard=(index, count, batch_size) if count > 1 else None)
    if count > 1 and source.num_examples is not None:  # the filter hides how many; Keras counts steps from it
        examples = examples.apply(tf.data.experimental.assert_cardinality(
            sharding.rows_of(source.num_examples, index, count, batch_size)))
    examples = examples.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotune(_batch(examples, batch_size // count, with_labels, drop_remainder=False))

