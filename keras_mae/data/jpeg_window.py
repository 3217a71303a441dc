"""Decoding only a crop window of a JPEG, with the pixels a full decode gives.

`tf.image.decode_and_crop_jpeg` skips the entropy decoding, inverse DCT and
colour conversion of the blocks outside the window: with MAE's random resized
crop (scale 0.2-1) that is on average 40% of the image. libjpeg's chroma
upsampling of a window's first and last column reads their neighbours, which a
window starting or ending there lacks (those columns then differ from the full
decode's by up to 55 levels), so the window is decoded one column wider on
each side and cut back: the result equals `decode_jpeg` then slice, bit for
bit (`tests/data/test_jpeg_window.py`).
"""

import tensorflow as tf


def jpeg_size(contents):
    """int32 `(height, width)` of the JPEG `contents` (a scalar string tensor), from its header alone."""
    shape = tf.image.extract_jpeg_shape(contents)
    return shape[0], shape[1]


def decode_jpeg_window(contents, box, channels, image_width=None, dct_method="INTEGER_ACCURATE"):
    """The uint8 pixels of `box` of the JPEG `contents`, decoding only that window.

    Args:
        contents: scalar string tensor. A JPEG file's bytes.
        box: int32 tensor `[4]`: top, left, height, width, inside the image.
        channels: int. 1 (grey) or 3 (RGB), as `tf.io.decode_jpeg`.
        image_width: int32 scalar or None. The image's width, where known (a
            folder's key table); None reads it from the header.
        dct_method: str. libjpeg's inverse DCT, as `tf.io.decode_jpeg`'s:
            "INTEGER_ACCURATE" (Pillow's pixels) or "INTEGER_FAST" (the pixels
            of TensorFlow's default decode, `tf.image.decode_image`).

    Returns:
        uint8 tensor `[height, width, channels]`, equal to
        `tf.io.decode_jpeg(contents, channels, dct_method=dct_method)` sliced
        to `box`.
    """
    box = tf.convert_to_tensor(box, tf.int32)
    if image_width is None:
        _, image_width = jpeg_size(contents)
    left = tf.maximum(box[1] - 1, 0)
    right = tf.minimum(box[1] + box[3] + 1, image_width)
    window = tf.image.decode_and_crop_jpeg(contents, tf.stack([box[0], left, box[2], right - left]), channels,
                                           dct_method=dct_method)
    return window[:, box[1] - left: box[1] - left + box[3]]
