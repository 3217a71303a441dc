"""Training input for linear probing and fine-tuning (facebookresearch/mae `main_linprobe.py`, `main_finetune.py`).

Linear probe: RandomResizedCrop(scale 0.08-1, bicubic) + flip, normalise.
Fine-tune (timm `create_transform(is_training=True, auto_augment=
"rand-m9-mstd0.5-inc1", re_prob=0.25, re_mode="pixel")` + `Mixup`): the same
crop and flip, RandAugment (`rand_augment.py`), normalise, random erasing, then
per batch mixup or cutmix with smoothed soft targets (`mix.py`). Evaluation
input is `make_eval_dataset` (resize + centre crop). All of it is tf ops driven
by stateless per-example seeds, so on every backend the same seed gives the
same batches; Keras's own `RandAugment`, `RandomErasing`, `MixUp` and `CutMix`
layers are other recipes (each module says how)."""

import math

import tensorflow as tf

from keras_mae.data import augment as augment_lib
from keras_mae.data import rand_augment as rand_augment_lib
from keras_mae.data.autotune import autotune_where_it_pays
from keras_mae.data.mix import mix_batch
from keras_mae.data.sharding import check_shard, shard_rows
from keras_mae.data.normalization import fit_normalization, normalize
from keras_mae.data.sources import load_source

LINPROBE_CROP_SCALE = (0.08, 1.0)  # torchvision's default, as main_linprobe / timm's transform.
_ATTEMPTS = 10


def random_erasing(image, seed, probability=0.25, area=(0.02, 1 / 3), log_aspect=(math.log(0.3), math.log(1 / 0.3))):
    """timm `RandomErasing(mode="pixel", max_count=1)` on one normalised image.

    Not `keras.layers.RandomErasing` (Keras 3.15), another operation: its `factor=p` draws each image's
    probability from U(0, p) (0.25 erases 12.4% of images), its box sides are sqrt(U(scale)) drawn
    independently (not area x log-uniform aspect), and its noise is `N(0, 1) * value_range[1]` clipped to
    `value_range`, which cannot give timm's unclipped N(0, 1) on normalised pixels.

    With `probability`, up to ten boxes are drawn (area fraction uniform in
    `area`, aspect ratio log-uniform); the first that fits strictly inside the
    image is filled with N(0, 1) noise per pixel and channel.

    Args:
        image: float32 tensor [H, W, C] (static shape), normalised.
        seed: int tensor [2]. Stateless seed.
        probability: float. Defaults to 0.25.
        area: (min, max) fraction of the image erased. Defaults to timm's (0.02, 1/3).
        log_aspect: (min, max) log aspect ratio. Defaults to timm's (log 0.3, log 1/0.3).

    Returns:
        float32 tensor [H, W, C].
    """
    height, width = image.shape[0], image.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 5)
    target = tf.random.stateless_uniform([_ATTEMPTS], seeds[0], *area) * float(height * width)
    aspect = tf.exp(tf.random.stateless_uniform([_ATTEMPTS], seeds[1], *log_aspect))
    h = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
    w = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    fits = (w < width) & (h < height)
    first = tf.argmax(tf.cast(fits, tf.int32))
    h, w = tf.gather(h, first), tf.gather(w, first)
    offset = tf.random.stateless_uniform([2], seeds[2])  # randint(0, H - h) is inclusive
    top = tf.cast(tf.floor(offset[0] * tf.cast(height - h + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(offset[1] * tf.cast(width - w + 1, tf.float32)), tf.int32)
    erase = (tf.random.stateless_uniform([], seeds[3]) < probability) & tf.reduce_any(fits)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    box = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w) & erase  # [H, W]
    noise = tf.random.stateless_normal(tf.shape(image), seeds[4])
    return tf.where(box[:, :, None], noise, image)


def make_rand_augment(mean, magnitude=9.0, magnitude_std=0.5, num_layers=2, prob=0.5):
    """timm's "rand-m9-mstd0.5-inc1" (`rand_augment.rand_augment`) on [0, 255] images, filled with the mean.

    Args:
        mean: per-channel mean in [0, 1] units; geometric ops fill with `round(255 * mean)`, as timm's
            `img_mean` hparam.
        magnitude, magnitude_std, num_layers, prob: see `rand_augment.rand_augment`.

    Returns:
        callable `(image [H, W, C] float in [0, 255], seed int [2]) -> float32 [H, W, C]`, reproducible from
        the seed.
    """
    fill = tf.constant([min(255.0, round(255.0 * m)) for m in mean], tf.float32)

    def apply(image, seed):
        return rand_augment_lib.rand_augment(image, seed, fill, magnitude, magnitude_std, num_layers, prob)

    return apply


def make_classification_dataset(spec_or_source, image_size, batch_size, num_channels=None, seed=0, split="train",
                                data_dir=None, mean=None, std=None, crop_scale=LINPROBE_CROP_SCALE,
                                rand_augment=False, random_erasing_prob=0.0, num_classes=None, mixup_alpha=0.0,
                                cutmix_alpha=0.0, switch_prob=0.5, label_smoothing=0.0, shuffle_buffer=10000,
                                shard=None):
    """Shuffled, augmented, normalised `(images, labels)` batches for supervised training.

    Args:
        spec_or_source: a `Source` or any spec `load_source` accepts; must be labelled.
        image_size: int or (height, width).
        batch_size: int. The last incomplete batch is dropped (as the official loaders).
        num_channels: int or None. 1, 3 or 4; None keeps the data's own.
        seed: int. Seeds shuffle, crops, flips, RandAugment, erasing and mixing. Defaults to 0.
        split, data_dir: see `load_source`.
        mean, std: per-channel statistics in [0, 1] units; None uses the source's.
        crop_scale: (min, max) area fraction of RandomResizedCrop. Defaults to (0.08, 1).
        rand_augment: bool. timm's rand-m9-mstd0.5-inc1 (`make_rand_augment`). Defaults to False.
        random_erasing_prob: float. timm RandomErasing probability (0.25 to fine-tune). Defaults to 0.
        num_classes: int or None. When set, labels become float one-hot
            targets (smoothed, mixed); when None they stay int32 class ids.
        mixup_alpha, cutmix_alpha, switch_prob, label_smoothing: see `mix_batch`; need `num_classes`.
        shuffle_buffer: int. Defaults to 10000.
        shard: `(index, count)` or None. This process's rows of every global batch of `batch_size` (see
            `make_pretrain_dataset`), with the augmentation one process would draw for them; mixup / cutmix
            mix within the process's rows (as the official code mixes each GPU's batch). Defaults to None.

    Returns:
        `tf.data.Dataset` of `(float32 [batch, H, W, C], int32 [batch] or float32 [batch, num_classes])`, with
        tf.data's autotuning off where the process has at most 16 CPUs (`keras_mae/data/autotune.py`).
    """
    source = load_source(spec_or_source, split, data_dir, num_channels)
    if not source.num_classes:
        raise ValueError(f"{source.name} has no labels; supervised training needs a labelled dataset.")
    if num_classes is None and (mixup_alpha > 0 or cutmix_alpha > 0 or label_smoothing > 0):
        raise ValueError("mixup, cutmix and label smoothing make soft targets: pass num_classes.")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    channels = source.num_channels
    mean, std = fit_normalization(source.mean if mean is None else mean, source.std if std is None else std, channels)
    augment = make_rand_augment(mean) if rand_augment else None

    def transform(example, noise):
        image, label = example
        pair = tf.stack([tf.constant(seed or 0, tf.int64), noise])  # this example's seed
        crop_seed, flip_seed, erase_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(pair, 4))
        image = augment_lib.random_resized_crop(image, size, crop_seed, scale=crop_scale)
        image = augment_lib.random_flip(image, flip_seed)
        if augment is not None:
            image = augment(tf.ensure_shape(image, [*size, channels]), augment_seed)
        image = normalize(image, mean, std)
        if random_erasing_prob > 0:
            image = random_erasing(image, erase_seed, random_erasing_prob)
        return image, label

    index, count = check_shard(shard, batch_size)
    noise = shard_rows(tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True), index, count, batch_size)
    examples = tf.data.Dataset.zip((source.examples(shuffle_buffer, seed, shard=(index, count, batch_size)), noise))
    batches = examples.map(transform, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size // count,
                                                                                 drop_remainder=True)
    if num_classes is not None:
        batch_noise = tf.data.Dataset.random(seed=(seed or 0) + 1, rerandomize_each_iteration=True)

        def mix(batch, noise):
            images, labels = batch
            batch_seed = tf.stack([tf.constant(seed or 0, tf.int64), noise])
            return mix_batch(images, labels, batch_seed, num_classes, mixup_alpha, cutmix_alpha, switch_prob,
                             label_smoothing=label_smoothing)

        batches = tf.data.Dataset.zip((batches, batch_noise)).map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    return autotune_where_it_pays(batches.prefetch(tf.data.AUTOTUNE))


def one_hot_labels(dataset, num_classes):
    """Maps the int labels of an `(images, labels)` dataset to float32 one-hot (evaluating soft-target models)."""
    return dataset.map(lambda images, labels: (images, tf.one_hot(tf.cast(labels, tf.int32), num_classes)))
