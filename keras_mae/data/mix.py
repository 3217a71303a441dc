"""Batch mixup / cutmix with label smoothing, as timm's `Mixup(mode="batch")` used by MAE fine-tuning.

Why not `keras.layers.MixUp` / `CutMix` (Keras 3.15; they run inside tf.data on every backend and are
seeded): they are another recipe. Both draw a lambda per image (timm: one per batch) and pair images by a
random permutation (timm: the batch reversed), and nothing switches between them (chained, every batch would
get both); CutMix's `factor=1.0` draws the Beta parameter itself from U(0, 1) (lambda std 0.38, not Beta(1, 1)'s
0.29), keeps its box inside the image (timm: centred anywhere, clipped) and weighs the labels by the float
box, not by the pixels pasted (0.812 for 83.6% kept pixels, measured). Label smoothing is not folded in. The
official `main_finetune.py` numbers come from timm's version, which is these few tf ops.
"""

import tensorflow as tf


def _beta(seed, alpha):
    """One Beta(alpha, alpha) sample from a stateless seed (ratio of two gammas)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma([], seeds[0], alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha)
    return a / tf.maximum(a + b, 1e-12)


def smooth_one_hot(labels, num_classes, label_smoothing=0.0):
    """timm's `one_hot(target, num_classes, on_value=1 - s + s / n, off_value=s / n)`, float32 (batch, n)."""
    off = label_smoothing / num_classes
    return tf.one_hot(tf.cast(labels, tf.int32), num_classes, on_value=1.0 - label_smoothing + off, off_value=off)


def cutmix_box(height, width, lam, seed):
    """timm's `rand_bbox` + `correct_lam`: a box of side ratio sqrt(1 - lam) centred anywhere, clipped.

    Args:
        height, width: int. Image size.
        lam: float32 scalar tensor. Sampled mixing weight.
        seed: int tensor [2]. Stateless seed.

    Returns:
        `(top, bottom, left, right, lam)`: int32 box edges (rows top:bottom,
        columns left:right) and the weight corrected to the box's clipped area.
    """
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(height * ratio, tf.int32)  # int() truncates, as in timm
    cut_w = tf.cast(width * ratio, tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    cy = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=width, dtype=tf.int32)
    top = tf.clip_by_value(cy - cut_h // 2, 0, height)
    bottom = tf.clip_by_value(cy + cut_h // 2, 0, height)
    left = tf.clip_by_value(cx - cut_w // 2, 0, width)
    right = tf.clip_by_value(cx + cut_w // 2, 0, width)
    area = tf.cast((bottom - top) * (right - left), tf.float32)
    return top, bottom, left, right, 1.0 - area / float(height * width)


def mix_batch(images, labels, seed, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5,
              prob=1.0, label_smoothing=0.1):
    """Mixes a batch with its reverse, by mixup or cutmix, and returns soft targets.

    timm `Mixup(mode="batch", correct_lam=True)`: with probability `prob`
    one lambda is drawn for the whole batch, from Beta(cutmix_alpha) with
    probability `switch_prob` (cutmix: a box of the reversed batch is pasted,
    lambda becomes the kept area) or Beta(mixup_alpha) otherwise (mixup:
    `lam * x + (1 - lam) * x[::-1]`). Targets are
    `lam * y + (1 - lam) * y[::-1]` with y the smoothed one-hot labels, so
    every row sums to 1. An alpha of 0 disables that kind of mix.

    Args:
        images: float tensor (batch, height, width, channels) with static height and width.
        labels: int tensor (batch,).
        seed: int tensor [2]. Stateless seed of this batch.
        num_classes: int.
        mixup_alpha: float. Beta parameter of mixup; 0 disables it. Defaults to 0.8.
        cutmix_alpha: float. Beta parameter of cutmix; 0 disables it. Defaults to 1.0.
        switch_prob: float. Probability of cutmix when both are enabled. Defaults to 0.5.
        prob: float. Probability of mixing a batch at all. Defaults to 1.0.
        label_smoothing: float. Defaults to 0.1.

    Returns:
        `(images, targets)`: mixed images and float32 targets (batch, num_classes).

    >>> import numpy as np
    >>> x = tf.constant(np.arange(2 * 4 * 4, dtype="float32").reshape(2, 4, 4, 1))
    >>> _, y = mix_batch(x, tf.constant([0, 1]), tf.constant([1, 2]), num_classes=3)
    >>> [round(float(v), 5) for v in tf.reduce_sum(y, axis=1)]
    [1.0, 1.0]
    """
    targets = smooth_one_hot(labels, num_classes, label_smoothing)
    if not (mixup_alpha > 0 or cutmix_alpha > 0):
        return images, targets
    height, width = images.shape[1], images.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    mixing = tf.random.stateless_uniform([], seeds[0]) < prob
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], seeds[1]) < switch_prob
    else:
        use_cutmix = tf.constant(cutmix_alpha > 0)
    lam_cutmix = _beta(seeds[2], cutmix_alpha) if cutmix_alpha > 0 else tf.constant(1.0)
    lam_mixup = _beta(seeds[2], mixup_alpha) if mixup_alpha > 0 else tf.constant(1.0)
    reverse = images[::-1]

    def cutmix():
        top, bottom, left, right, lam = cutmix_box(height, width, lam_cutmix, seeds[3])
        rows = tf.range(height)[:, None]
        cols = tf.range(width)[None, :]
        box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # [H, W]
        return tf.where(box[None, :, :, None], reverse, images), lam

    def mixup():
        lam = tf.cast(lam_mixup, images.dtype)
        return lam * images + (1.0 - lam) * reverse, lam_mixup

    mixed, lam = tf.cond(use_cutmix, cutmix, mixup)
    images, lam = tf.cond(mixing, lambda: (mixed, lam), lambda: (images, tf.constant(1.0)))
    return images, lam * targets + (1.0 - lam) * targets[::-1]
