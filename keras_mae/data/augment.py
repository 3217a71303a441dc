"""Per-image transforms of MAE pretraining and evaluation, in tf ops for tf.data.

Pretraining (facebookresearch/mae `main_pretrain.py`): RandomResizedCrop(
scale=(0.2, 1.0), bicubic), RandomHorizontalFlip, then Normalize (`normalization.py`). Evaluation
(`util/datasets.py`): Resize(size / 0.875, bicubic) on the shorter side,
CenterCrop(size), Normalize.

Why not `keras_cv.layers.RandomCropAndResize`: it crops with
`tf.image.crop_and_resize`, which only offers bilinear and nearest, so
`interpolation="bicubic"` fails ("Attr 'method' of 'CropAndResize' Op passed
string 'bicubic' not in: bilinear, nearest") on every backend with
keras-cv 0.9 / Keras 3.15, and it does not resize with antialiasing as Pillow
does for torchvision. Its randomness is also stateful: two pipelines built
with the same seed give different crops. The crop below is torchvision's
`RandomResizedCrop.get_params` in graph ops, driven by stateless random ops
with a per-example seed: reproducible and independent of parallelism.
"""

import math

import tensorflow as tf

CROP_SCALE = (0.2, 1.0)  # MAE pretraining; torchvision's default is (0.08, 1.0).
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
EVAL_CROP_FRACTION = 0.875  # 224 / 256, as the official evaluation.
_ATTEMPTS = 10  # torchvision tries 10 crops before falling back to a centre crop.


def resize(image, size):
    """Bicubic resize to `size`, antialiased and rounded to whole pixels as Pillow's: float32 in [0, 255].

    uint8 pixels go to the kernels as they are: both compute in float32, so the output is the same bit for bit as
    after a cast, without a float copy of the crop (BENCHMARKS.md, "Input pipeline at 224 px").
    """
    if image.dtype != tf.uint8:
        image = tf.cast(image, tf.float32)
    resize = lambda antialias: tf.image.resize(image, size, "bicubic", antialias=antialias)
    # Antialiasing only changes downscaling, and costs 2-3x: skip it when enlarging.
    shrinks = tf.reduce_any(tf.shape(image)[:2] > tf.convert_to_tensor(size, tf.int32))
    return whole_pixels(tf.cond(shrinks, lambda: resize(True), lambda: resize(False)))


def whole_pixels(image):
    """Bicubic overshoots; Pillow clips, and rounds half up, to uint8. Whole values make uint8 batches (the
    pipelines' `normalize=False`) and float ones the same model inputs."""
    return tf.floor(tf.clip_by_value(image, 0.0, 255.0) + 0.5)


def shrunk_window(image, size, scale, top, left):
    """The `size` window at (`top`, `left`) of `image` shrunk by `scale` (per axis, at most 1), computed alone.

    The same kernel as `resize`'s antialiased bicubic (`ScaleAndTranslate`, "keyscubic"), evaluated only at the
    window's pixels instead of at every pixel of the shrunk image: the evaluation transform's centre crop keeps
    46% (a 5:3 image) to 77% (a square one) of them (BENCHMARKS.md, "Input pipeline at 224 px"). The sample
    positions are computed from the window's offset, which rounds differently in float32, so a value may differ
    from `resize` then slice by one level (1 in 63,000 values on JPEGs; Pillow's own pixels differ from both in
    18%).

    Args:
        image: tensor `[H, W, C]`, uint8 or floating.
        size: (height, width) of the window.
        scale: float32 tensor `[2]`: the shrunk image's size over `image`'s, per axis.
        top, left: float32 scalars (whole numbers): the window's offset in the shrunk image.

    Returns:
        float32 tensor `[height, width, C]` of whole values in [0, 255].
    """
    if image.dtype != tf.uint8:
        image = tf.cast(image, tf.float32)
    window = tf.raw_ops.ScaleAndTranslate(images=image[None], size=tf.constant(size, tf.int32), scale=scale,
                                          translation=-tf.stack([top, left]), kernel_type="keyscubic",
                                          antialias=True)[0]
    return whole_pixels(window)


def sample_crop_box(height, width, seed, scale=CROP_SCALE, ratio=CROP_RATIO):
    """Samples a crop box as torchvision's `RandomResizedCrop.get_params`.

    Ten attempts draw an area fraction uniformly in `scale` and an aspect ratio
    log-uniformly in `ratio`; the first that fits is placed uniformly. When none
    fits, the whole image cut to the nearest allowed ratio is used, centred.

    Args:
        height: int32 scalar tensor. Image height.
        width: int32 scalar tensor. Image width.
        seed: int tensor `[2]`. Stateless seed.
        scale: (min, max) fraction of the image area to crop.
        ratio: (min, max) aspect ratio (width / height) of the crop.

    Returns:
        int32 tensor `[4]`: top, left, crop height, crop width.
    """
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    area = height * width * tf.random.stateless_uniform([_ATTEMPTS], seeds[0], *scale)
    log_ratio = tf.random.stateless_uniform(
        [_ATTEMPTS], seeds[1], math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = tf.exp(log_ratio)
    widths, heights = tf.round(tf.sqrt(area * aspect)), tf.round(tf.sqrt(area / aspect))
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))  # The first attempt that fits, as the loop.

    in_ratio = width / height
    fallback_w = tf.where(in_ratio > ratio[1], tf.round(height * ratio[1]), width)
    fallback_h = tf.where(in_ratio < ratio[0], tf.round(width / ratio[0]), height)
    found = tf.reduce_any(fits)
    crop_h = tf.where(found, tf.gather(heights, first), fallback_h)
    crop_w = tf.where(found, tf.gather(widths, first), fallback_w)
    offset = tf.random.stateless_uniform([2], seeds[2])
    top = tf.where(found, tf.floor(offset[0] * (height - crop_h + 1)), tf.floor((height - crop_h) / 2))
    left = tf.where(found, tf.floor(offset[1] * (width - crop_w + 1)), tf.floor((width - crop_w) / 2))
    return tf.cast(tf.stack([top, left, crop_h, crop_w]), tf.int32)


def crop_to_box(image, box):
    """The `box` (int32 `[4]`: top, left, height, width) of an `[H, W, C]` image."""
    return tf.slice(image, tf.concat([box[:2], [0]], 0), tf.concat([box[2:], [-1]], 0))


def random_resized_crop(image, size, seed, scale=CROP_SCALE, ratio=CROP_RATIO):
    """Crops a random area and aspect ratio (`sample_crop_box`), resized to `size`.

    Args:
        image: tensor `[H, W, C]`, any size (smaller than `size` is fine).
        size: (height, width) of the output.
        seed: int tensor `[2]`. Stateless seed.
        scale: (min, max) fraction of the image area to crop.
        ratio: (min, max) aspect ratio (width / height) of the crop.

    Returns:
        float32 tensor `[height, width, C]` in [0, 255], bicubic.
    """
    shape = tf.shape(image)
    box = sample_crop_box(shape[0], shape[1], seed, scale, ratio)
    return resize(crop_to_box(image, box), size)


def random_flip(image, seed):
    """Flips `[H, W, C]` left-right with probability 1/2 (stateless `seed`, int tensor `[2]`)."""
    return tf.image.stateless_random_flip_left_right(image, seed)


def center_crop_geometry(height, width, size, crop_fraction=EVAL_CROP_FRACTION):
    """float32 `(new_h, new_w, top, left)` of the evaluation transform: the resized image's size (keeping the
    aspect ratio, covering `size / crop_fraction`) and the centre crop's offset in it, all whole numbers."""
    target_h, target_w = float(int(size[0] / crop_fraction)), float(int(size[1] / crop_fraction))
    scale = tf.maximum(target_h / height, target_w / width)
    # floor(x + 1e-4): int() of torchvision, robust to float error on the scaled side.
    new_h = tf.maximum(tf.floor(height * scale + 1e-4), target_h)
    new_w = tf.maximum(tf.floor(width * scale + 1e-4), target_w)
    return new_h, new_w, tf.round((new_h - size[0]) / 2), tf.round((new_w - size[1]) / 2)


def resize_center_crop(image, size, crop_fraction=EVAL_CROP_FRACTION):
    """The evaluation transform: resize, bicubic, then centre crop.

    The image is scaled (keeping its aspect ratio) so that it covers
    `size / crop_fraction` (for a square size: its shorter side becomes
    `int(size / 0.875)`), then the centre `size` is cut out. Images already
    of `size` pass through unchanged.

    Args:
        image: tensor `[H, W, C]`.
        size: (height, width) of the output.
        crop_fraction: float. Fraction of the resized image kept.

    Returns:
        float32 tensor `[height, width, C]` in [0, 255].
    """
    out_h, out_w = size
    shape = tf.shape(image)

    def resize_and_crop():
        height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        new_h, new_w, top, left = center_crop_geometry(height, width, size, crop_fraction)

        def resize_then_crop():  # enlarging (no antialiasing): the whole image, then the crop
            resized = resize(image, tf.cast(tf.stack([new_h, new_w]), tf.int32))
            return tf.slice(resized, tf.cast(tf.stack([top, left, 0.0]), tf.int32), [out_h, out_w, -1])

        # Shrinking, as nearly always: only the crop's pixels are computed.
        shrinks = tf.logical_or(new_h < height, new_w < width)
        return tf.cond(shrinks, lambda: shrunk_window(image, size, tf.stack([new_h / height, new_w / width]), top,
                                                      left), resize_then_crop)

    same = tf.logical_and(tf.equal(shape[0], out_h), tf.equal(shape[1], out_w))
    output = tf.cond(same, lambda: tf.cast(image, tf.float32), resize_and_crop)
    return tf.ensure_shape(output, [out_h, out_w, image.shape[-1]])
