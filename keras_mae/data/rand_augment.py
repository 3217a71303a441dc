"""timm's RandAugment "rand-m9-mstd0.5-inc1" (MAE fine-tuning), in tf ops for tf.data, from a stateless seed.

timm `rand_augment_transform("rand-m9-mstd0.5-inc1", hparams)` as `create_transform` builds it for
`main_finetune.py`: each image gets 2 ops drawn with replacement from the 15 of `OPS`, each applied with
probability 0.5 at a magnitude drawn from N(9, 0.5) clipped to [0, 10] (of 10); signed ops (rotate, shear,
translate, the enhancements) get a random sign. Every op is the PIL call timm makes, on the uint8 values PIL
would hold: the input is rounded to integers and every op returns integers, PIL's LUTs, its truncating
`Image.blend`, its 3x3 SMOOTH filter and its bicubic affine sampler (edge-clamped, filled with the dataset
mean outside, as timm's `img_mean` fill). Tested op by op against Pillow (`tests/data/test_augmentation.py`).

Why not `keras.layers.RandAugment` (Keras 3.15): it is another policy, with 11 ops (no invert, no
solarize-add; shear and translate move both axes at once), every chosen op always applied, and each op's
strength uniform in [0, factor] of a range of its own (factor 0.9: rotations up to 324 degrees, brightness
shifts up to 0.9 x 255) instead of timm's m9 levels (rotate +-27 degrees, shear +-0.27, translate +-40%,
enhancement factors 1 +- 0.81); built twice with the same seed inside a parallel tf.data map it gives
different images. Its single-op layers do not fit either: they draw their own strength at each call, and
`keras.layers.Equalization` is not PIL's equalize (cdf-min stretch, not PIL's step LUT).
"""

import math

import tensorflow as tf

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
       "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
       "TranslateXRel", "TranslateYRel")  # timm's _RAND_INCREASING_TRANSFORMS, in its order
_LEVEL_DENOM = 10.0


def _pointwise(fn):
    """Applies `fn` to the colour channels only: RGB of a 4-channel image (PIL leaves an alpha band alone in these
    ops); grey and RGB images are all colour."""

    def apply(image, *args):
        if image.shape[-1] == 4:
            return tf.concat([fn(image[..., :3], *args), image[..., 3:]], axis=-1)
        return fn(image, *args)

    return apply


def _grey(colour):
    """PIL's `convert("L")`: (19595 R + 38470 G + 7471 B + 0x8000) >> 16; a grey image is its own."""
    if colour.shape[-1] == 1:
        return colour
    rgb = tf.cast(colour, tf.int32)
    weights = tf.constant([19595, 38470, 7471], tf.int32)
    return tf.cast((tf.reduce_sum(rgb * weights, axis=-1, keepdims=True) + 32768) // 65536, tf.float32)


def _blend(degenerate, image, factor):
    """PIL's `Image.blend(degenerate, image, factor)` on uint8: float32 arithmetic, clipped, truncated."""
    return tf.floor(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0))


def _lut(colour, table):
    """Maps each integer value through a per-channel table [channels, 256]."""
    index = tf.cast(colour, tf.int32) + 256 * tf.range(colour.shape[-1])
    return tf.gather(tf.reshape(tf.cast(table, tf.float32), [-1]), index)


def _histograms(colour):
    """[channels, 256] int32 counts of each value per channel."""
    flat = tf.reshape(tf.transpose(tf.cast(colour, tf.int32), [2, 0, 1]), [colour.shape[-1], -1])
    return tf.math.bincount(flat, minlength=256, maxlength=256, axis=-1)


@_pointwise
def auto_contrast(colour):
    """PIL `ImageOps.autocontrast`: each channel's [min, max] stretched to [0, 255] (in doubles, truncated)."""
    values = tf.cast(colour, tf.float64)
    low = tf.reduce_min(values, axis=[0, 1])
    high = tf.reduce_max(values, axis=[0, 1])
    scale = 255.0 / tf.where(high > low, high - low, 1.0)
    out = tf.floor(tf.clip_by_value(values * scale - low * scale, 0.0, 255.0))
    return tf.cast(tf.where(high > low, out, values), tf.float32)


@_pointwise
def equalize(colour):
    """PIL `ImageOps.equalize`: lut[i] = (step // 2 + count below i) // step, step = (n - top count) // 255."""
    hist = _histograms(colour)
    top = tf.gather(hist, 255 - tf.argmax(tf.cast(hist[:, ::-1] > 0, tf.int32), axis=1), batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - top) // 255
    below = tf.cumsum(hist, axis=1, exclusive=True)
    table = tf.clip_by_value((step[:, None] // 2 + below) // tf.maximum(step[:, None], 1), 0, 255)
    keep = (tf.math.count_nonzero(hist, axis=1) <= 1) | (step == 0)
    table = tf.where(keep[:, None], tf.range(256)[None, :], table)
    return _lut(colour, table)


@_pointwise
def invert(colour):
    """PIL `ImageOps.invert`."""
    return 255.0 - colour


@_pointwise
def posterize(colour, bits):
    """PIL `ImageOps.posterize`: keeps the top `bits` bits (0 bits: black); 8 bits or more: unchanged."""
    mask = tf.bitwise.invert(tf.bitwise.left_shift(1, 8 - tf.minimum(bits, 8)) - 1)
    return tf.cast(tf.bitwise.bitwise_and(tf.cast(colour, tf.int32), mask), tf.float32)


@_pointwise
def solarize(colour, threshold):
    """PIL `ImageOps.solarize`: values >= threshold are inverted."""
    return tf.where(colour < threshold, colour, 255.0 - colour)


@_pointwise
def solarize_add(colour, addition, threshold=128.0):
    """timm `solarize_add`: values below threshold get `addition`, capped at 255."""
    return tf.where(colour < threshold, tf.minimum(colour + addition, 255.0), colour)


@_pointwise
def color(colour, factor):
    """PIL `ImageEnhance.Color`: blend with the grey image (a grey image is unchanged)."""
    return _blend(tf.broadcast_to(_grey(colour), tf.shape(colour)), colour, factor)


@_pointwise
def contrast(colour, factor):
    """PIL `ImageEnhance.Contrast`: blend with the grey image's rounded mean."""
    mean = tf.floor(tf.reduce_mean(tf.cast(_grey(colour), tf.float64)) + 0.5)
    return _blend(tf.cast(mean, tf.float32), colour, factor)


@_pointwise
def brightness(colour, factor):
    """PIL `ImageEnhance.Brightness`: blend with black."""
    return _blend(0.0, colour, factor)


@_pointwise
def sharpness(colour, factor):
    """PIL `ImageEnhance.Sharpness`: blend with `ImageFilter.SMOOTH` (3x3, centre 5, /13, rounded; border kept)."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    channels = colour.shape[-1]
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(colour[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(tf.floor(tf.clip_by_value(smooth, 0.0, 255.0) + 0.5), [[1, 1], [1, 1], [0, 0]])
    height, width = colour.shape[0], colour.shape[1]
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    interior = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    return _blend(tf.where(interior[:, :, None], smooth, colour), colour, factor)


def _cubic(v1, v2, v3, v4, d):
    """PIL's BICUBIC (Geometry.c) through four samples at fraction `d` past `v2`."""
    return v2 + d * ((v3 - v1) + d * ((2.0 * (v1 - v2) + v3 - v4) + d * (v2 - v1 - v3 + v4)))


def affine(image, coefficients, fill):
    """PIL `Image.transform(size, AFFINE, (a, b, c, d, e, f), BICUBIC, fillcolor=fill)`.

    Output pixel centre (x + 0.5, y + 0.5) samples the input at (a x + b y + c, d x + e y + f): bicubic on the
    edge-clamped image when that point lies inside it, `fill` otherwise; the result is truncated to integers.
    When (a, b, c) or (d, e, f) is the Python tuple (1, 0, 0) / (0, 1, 0), that axis is sampled exactly at
    the pixel and only the other one is interpolated (4 taps instead of 16: the same result, faster).

    Args:
        image: float32 [H, W, C] (static shape), integer values in [0, 255].
        coefficients: six scalars (floats or float64 tensors), PIL's order.
        fill: float32 [C], the value of points outside the input.

    Returns:
        float32 [H, W, C].
    """
    height, width = image.shape[0], image.shape[1]
    exact_x = all(isinstance(v, (int, float)) for v in coefficients[:3]) and tuple(coefficients[:3]) == (1, 0, 0)
    exact_y = all(isinstance(v, (int, float)) for v in coefficients[3:]) and tuple(coefficients[3:]) == (0, 1, 0)
    a, b, c, d, e, f = [tf.cast(v, tf.float64) for v in coefficients]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float64) + 0.5, tf.range(width, dtype=tf.float64) + 0.5,
                         indexing="ij")
    x_in = a * xs + b * ys + c - 0.5
    y_in = d * xs + e * ys + f - 0.5
    inside = (x_in >= -0.5) & (x_in < width - 0.5) & (y_in >= -0.5) & (y_in < height - 0.5)
    x0, y0 = tf.floor(x_in), tf.floor(y_in)
    dx, dy = tf.cast(x_in - x0, tf.float32)[:, :, None], tf.cast(y_in - y0, tf.float32)[:, :, None]
    x0 = tf.cast(tf.clip_by_value(x0, -2.0, width + 1.0), tf.int32)
    y0 = tf.cast(tf.clip_by_value(y0, -2.0, height + 1.0), tf.int32)
    flat = tf.reshape(image, [height * width, image.shape[-1]])
    cols = [tf.clip_by_value(x0 + j, 0, width - 1) for j in ((0,) if exact_x else (-1, 0, 1, 2))]
    rows = [tf.clip_by_value(y0 + i, 0, height - 1) * width for i in ((0,) if exact_y else (-1, 0, 1, 2))]
    samples = [[tf.gather(flat, row + col) for col in cols] for row in rows]
    samples = [taps[0] if exact_x else _cubic(*taps, dx) for taps in samples]
    out = samples[0] if exact_y else _cubic(*samples, dy)
    return tf.where(inside[:, :, None], tf.floor(tf.clip_by_value(out, 0.0, 255.0)), fill)


def rotate(image, degrees, fill):
    """PIL `Image.rotate(degrees, BICUBIC, fillcolor=fill)`: counter-clockwise about the centre, same size."""
    height, width = image.shape[0], image.shape[1]
    angle = -tf.cast(degrees, tf.float64) * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    return affine(image, (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy), fill)


def _signed(value, negate):
    return tf.where(negate, -value, value)


def _apply_op(image, index, magnitude, negate, fill):
    """timm `AugmentOp.__call__` of op `OPS[index]` at `magnitude` (0-10) with its level-to-argument rule."""
    level = magnitude / _LEVEL_DENOM
    enhance = tf.maximum(0.1, 1.0 + _signed(level * 0.9, negate))  # _enhance_increasing_level_to_arg
    shear = tf.cast(_signed(level * 0.3, negate), tf.float64)
    translate = tf.cast(_signed(level * 0.45, negate), tf.float64)  # translate_pct
    height, width = image.shape[0], image.shape[1]
    branches = [
        lambda: auto_contrast(image),
        lambda: equalize(image),
        lambda: invert(image),
        lambda: rotate(image, _signed(level * 30.0, negate), fill),
        lambda: posterize(image, 4 - tf.cast(level * 4.0, tf.int32)),
        lambda: solarize(image, 256.0 - tf.minimum(256.0, tf.floor(level * 256.0))),
        lambda: solarize_add(image, tf.minimum(128.0, tf.floor(level * 110.0))),
        lambda: color(image, enhance),
        lambda: contrast(image, enhance),
        lambda: brightness(image, enhance),
        lambda: sharpness(image, enhance),
        lambda: affine(image, (1.0, shear, 0.0, 0.0, 1.0, 0.0), fill),
        lambda: affine(image, (1.0, 0.0, 0.0, shear, 1.0, 0.0), fill),
        lambda: affine(image, (1.0, 0.0, translate * width, 0.0, 1.0, 0.0), fill),
        lambda: affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, translate * height), fill),
    ]
    return tf.ensure_shape(tf.switch_case(index, branches), image.shape)


def rand_augment(image, seed, fill, magnitude=9.0, magnitude_std=0.5, num_layers=2, prob=0.5):
    """timm's RandAugment `rand-m{magnitude}-mstd{magnitude_std}-n{num_layers}-p{prob}-inc1` on one image.

    Args:
        image: float [H, W, C] (static shape) in [0, 255]; C is 1 (PIL "L"), 3 (RGB) or 4 (RGB + alpha, which
            only the geometric ops move). Rounded to integers first, as the uint8 image PIL holds.
        seed: int tensor [2]. Stateless seed: the same seed gives the same ops, magnitudes and result.
        fill: float [C]. Value of pixels that the geometric ops bring in (timm: the mean, `round(255 * mean)`).
        magnitude: float. Mean magnitude on timm's 0-10 scale. Defaults to 9.
        magnitude_std: float. Std of the magnitude drawn per op application (clipped to [0, 10]); 0 keeps
            it fixed. Defaults to 0.5.
        num_layers: int. Ops per image, drawn with replacement. Defaults to 2.
        prob: float. Probability of applying each drawn op. Defaults to 0.5.

    Returns:
        float32 [H, W, C] with integer values in [0, 255].

    >>> image = tf.fill([8, 8, 3], 100.0)
    >>> out = rand_augment(image, tf.constant([1, 2]), fill=tf.fill([3], 124.0))
    >>> out.shape, bool(tf.reduce_all(out == rand_augment(image, tf.constant([1, 2]), fill=tf.fill([3], 124.0))))
    (TensorShape([8, 8, 3]), True)
    """
    image = tf.round(tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0))
    fill = tf.cast(tf.broadcast_to(fill, [image.shape[-1]]), tf.float32)
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
        seeds = tf.random.experimental.stateless_split(layer_seed, 4)
        index = tf.random.stateless_uniform([], seeds[0], 0, len(OPS), dtype=tf.int32)
        apply = tf.random.stateless_uniform([], seeds[1]) < prob
        level = tf.constant(float(magnitude))
        if magnitude_std > 0:
            level = level + magnitude_std * tf.random.stateless_normal([], seeds[2])
        level = tf.clip_by_value(level, 0.0, _LEVEL_DENOM)
        negate = tf.random.stateless_uniform([], seeds[3]) > 0.5  # timm's _randomly_negate
        image = tf.cond(apply, lambda: _apply_op(image, index, level, negate, fill), lambda: image)
    return image
