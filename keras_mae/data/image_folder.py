"""A folder of image files, optionally in class subfolders, as a `Source`.

Files are checked with Pillow, which reads every mode we promise (palette,
16-bit, CMYK, RGBA, WebP, GIF) where `tf.io.decode_image` does not (CMYK,
16-bit grey). The pipeline decodes grey and RGB JPEGs (nearly all of ImageNet)
with TensorFlow's JPEG decoder in ISLOW mode, which gives Pillow's pixels
exactly and scales over cores without Python's GIL (1.35x faster on 2
cores), and everything else with Pillow through `tf.py_function`.

Unreadable files (zero bytes, not an image, truncated) are dropped and named
in one summary line. Only a full decode catches a truncated JPEG, so folders
of up to `FULL_CHECK_LIMIT` files are fully decoded once up front (JPEGs at
1/8 scale, about 1 ms each, in a thread pool) and the result is cached per
process; bigger folders (ImageNet) get a header check up front and the
pipeline drops, and logs, what still fails to decode when it is read.
"""

import concurrent.futures
import os

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from keras_mae.data.base import (
    Source,
    check_num_channels,
    convert_channels,
)
from keras_mae.data.jpeg_window import decode_jpeg_window
from keras_mae.data.normalization import IMAGENET_MEAN, IMAGENET_STD

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FULL_CHECK_LIMIT = 100_000
_MAX_NAMED = 10  # Unreadable files named in the summary line.
_CHECKED = {}  # (root, files, full) -> (problems, decoders, sizes); so pretrain + eval check a folder once.
_WARNED = set()  # Files already reported by the lazy check.
_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# Decoder per file: 0 is Pillow; 1 and 2 are TensorFlow for grey and RGB JPEGs. A JPEG that does not end with
# its end-of-image marker (a truncated copy or download) goes to Pillow, whose failure names the file.
_TF_JPEG_MODES = {"L": 1, "RGB": 2}
_JPEG_END = b"\xff\xd9"


def _ends_like_a_jpeg(image):
    """Whether the open JPEG `image`'s file ends with the end-of-image marker (zero padding after it allowed).

    Reads the last 64 bytes through Pillow's own file object: no second open per file."""
    f = image.fp
    f.seek(max(f.seek(0, os.SEEK_END) - 64, 0))
    return f.read().rstrip(b"\0").endswith(_JPEG_END)


def list_image_files(root):
    """Lists image files under `root`, recursively, in sorted order.

    Args:
        root: str. Folder to walk (symlinks followed; a folder or file reached twice, as through a
            symlink loop, is read once; hidden entries skipped; names that are not UTF-8 skipped and named).

    Returns:
        `(files, labels, classes)`: paths; int labels, the index in `classes`
        of the file's top-level subfolder, or -1 for files directly in `root`;
        sorted names of the top-level subfolders holding images.
    """
    files, tops, seen_dirs, seen_files, undecodable = [], [], set(), set(), []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        # A folder reached twice (a symlink loop, or two links to one folder) is read once.
        if os.path.realpath(dirpath) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(os.path.realpath(dirpath))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in seen_dirs)
        relative = os.path.relpath(dirpath, root)
        top = None if relative == os.curdir else relative.split(os.sep)[0]
        for name in sorted(filenames):
            if not name.lower().endswith(IMAGE_EXTENSIONS) or name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if not _utf8(path):
                undecodable.append(path)
                continue
            real = os.path.realpath(path)
            if real in seen_files:
                continue
            seen_files.add(real)
            files.append(path)
            tops.append(top)
    if undecodable:
        named = ", ".join(repr(os.fsencode(p))[1:] for p in undecodable[:_MAX_NAMED])
        logging.warning("Skipped %d files under %s whose names are not UTF-8 (rename them to read them): %s",
                        len(undecodable), root, named)
    classes = sorted({t for t in tops if t is not None})
    index = {c: i for i, c in enumerate(classes)}
    labels = [index.get(t, -1) for t in tops]
    return files, labels, classes


def _utf8(path):
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:  # os.walk's surrogate escapes of bytes that are not UTF-8
        return False


def pil_to_array(image, num_channels):
    """Converts a Pillow image of any mode to a uint8 array.

    Args:
        image: `PIL.Image.Image`, loaded. Any mode: 1, L, LA, P, PA, RGB, RGBA,
            CMYK, YCbCr, I, I;16, F, ...
        num_channels: int. 1 (grey, ITU-R 601-2 luma), 3 (RGB) or 4 (RGBA).

    Returns:
        uint8 numpy array `[H, W, num_channels]`.
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        # 16-bit grey (Pillow opens it as "I;16" or "I"): scale 0..65535 to 0..255,
        # as Pillow's own convert("L") would clip everything above 255 to white.
        if image.mode.startswith("I;16") or pixels.max(initial=0) > 255:
            pixels = pixels * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    elif image.mode in ("P", "PA"):
        # Via RGBA so palette transparency is read, as Pillow advises.
        image = image.convert("RGBA")
    array = np.asarray(image.convert(_PIL_MODES[num_channels]))
    return array[..., None] if array.ndim == 2 else array


def read_image(path, num_channels=3):
    """Decodes one image file with Pillow (first frame of animations).

    Args:
        path: str.
        num_channels: int. 1, 3 or 4.

    Returns:
        uint8 array `[H, W, num_channels]`. Raises on unreadable files.
    """
    with Image.open(path) as image:
        image.load()
        return pil_to_array(image, num_channels)


def _inspect(path, full):
    """Returns (why `path` cannot be read or None, its decoder: see `_TF_JPEG_MODES`, its (height, width))."""
    try:
        with Image.open(path) as image:  # Reads the header only.
            decoder = _TF_JPEG_MODES.get(image.mode, 0) if image.format == "JPEG" else 0
            size = image.size[::-1]  # before draft(), which shrinks it
            if decoder and not full and not _ends_like_a_jpeg(image):
                decoder = 0
            if full:
                image.draft(image.mode, (1, 1))  # JPEG: 1/8 scale, still reads every byte.
                image.load()
        return None, decoder, size
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ...
        return f"{type(error).__name__}: {error}"[:80], 0, (0, 0)


def check_files(root, files, full):
    """Finds unreadable files, logging one summary line when there are any.

    Args:
        root: str. Folder, for the log line.
        files: list of str.
        full: bool. Decode fully (catches truncation) rather than read headers.

    Returns:
        `(problems, decoders, sizes)`: dict path -> reason for the unreadable
        files; the decoder of each file (see `_TF_JPEG_MODES`); its
        `(height, width)` from the header.
    """
    key = (root, tuple(files), full)
    if key not in _CHECKED:
        # Chunks, so a million files make thousands of futures, not millions.
        chunks = [files[i : i + 256] for i in range(0, len(files), 256)]
        check = lambda chunk: [_inspect(f, full) for f in chunk]
        with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            results = [r for chunk in pool.map(check, chunks) for r in chunk]
        problems = {f: reason for f, (reason, _, _) in zip(files, results) if reason is not None}
        _CHECKED[key] = problems, [decoder for _, decoder, _ in results], [size for _, _, size in results]
    problems, decoders, sizes = _CHECKED[key]
    if problems:
        named = [f"{os.path.relpath(f, root)} ({r})" for f, r in list(problems.items())[:_MAX_NAMED]]
        more = len(problems) - len(named)
        logging.warning(
            "Skipped %d unreadable files of %d under %s: %s%s",
            len(problems), len(files), root, ", ".join(named),
            f", ... and {more} more" if more else "",
        )
    return problems, decoders, sizes


def _decoders(num_channels):
    """Returns `(decode_fn, crop_decode_fn)` of a folder's `Source` (keys: path, label, decoder, height, width)."""

    def read(path):
        path = path.numpy().decode()
        try:
            return read_image(path, num_channels), True
        except Exception as error:  # The lazy check: drop the file, never crash the run.
            if path not in _WARNED:
                _WARNED.add(path)
                logging.warning("Skipped unreadable file %s (%s)", path, _inspect(path, True)[0] or error)
            return np.zeros((1, 1, num_channels), np.uint8), False

    def pillow(path):
        image, ok = tf.py_function(read, [path], [tf.uint8, tf.bool])
        image.set_shape([None, None, num_channels])
        return image, ok

    def jpeg(path, channels):
        # INTEGER_ACCURATE is libjpeg's ISLOW, Pillow's default: the same pixels.
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels, dct_method="INTEGER_ACCURATE")
        return convert_channels(image, num_channels), tf.constant(True)

    def pillow_crop(path, box):
        image, ok = pillow(path)
        # A file that failed (a 1x1 placeholder) or changed since it was loaded (the box was drawn for the
        # header's size) is dropped after, as a JPEG's failed window decode: its box is cut to the image.
        shape = tf.shape(image)[:2]
        ok = tf.logical_and(ok, tf.reduce_all(box[:2] + box[2:] <= shape))
        top_left = tf.minimum(box[:2], shape - 1)
        size = tf.minimum(box[2:], shape - top_left)
        return tf.slice(image, tf.concat([top_left, [0]], 0), tf.concat([size, [-1]], 0)), ok

    def jpeg_crop(path, channels, box, width):
        window = decode_jpeg_window(tf.io.read_file(path), box, channels, image_width=width)
        return convert_channels(window, num_channels), tf.constant(True)

    def decode(path, label, decoder, height, width):
        branches = [lambda: pillow(path), lambda: jpeg(path, 1), lambda: jpeg(path, 3)]
        image, ok = tf.switch_case(decoder, branches)
        return (image, label), ok

    def decode_fn(keys):
        return _kept(keys.map(decode, num_parallel_calls=tf.data.AUTOTUNE))

    def crop_decode_fn(keyed, crop_box):
        def decode_crop(key, tag):
            path, label, decoder, height, width = key
            # The box from the size the header gave at load, drawn outside the decoder's branches: ops in a branch
            # cost more in tf.data, as much as decoding the window saves on a 400 px JPEG (BENCHMARKS.md).
            box = crop_box(height, width, tag)
            branches = [lambda: pillow_crop(path, box), lambda: jpeg_crop(path, 1, box, width),
                        lambda: jpeg_crop(path, 3, box, width)]
            image, ok = tf.switch_case(decoder, branches)
            return (image, label, tag), ok

        return _kept(keyed.map(decode_crop, num_parallel_calls=tf.data.AUTOTUNE))

    return decode_fn, crop_decode_fn


def _kept(examples):
    """`(example, ok)` -> `example`, without the files that failed to decode."""
    # TF's JPEG decoder raises on files the header check let through (lazy check).
    examples = examples.ignore_errors(log_warning=True)
    examples = examples.filter(lambda example, ok: ok)
    return examples.map(lambda example, _: example)


def load_image_folder(path, num_channels=None, full_check=None):
    """Loads a folder of images (class subfolders optional) as a `Source`.

    Args:
        path: str. Folder; searched recursively for `IMAGE_EXTENSIONS`, any case.
        num_channels: int or None. 1, 3 or 4; None means 3 (RGB).
        full_check: bool or None. Decode every file up front to drop unreadable
            ones; None does so up to `FULL_CHECK_LIMIT` files.

    Returns:
        `Source` with ImageNet's mean/std; labels index the sorted top-level
        subfolders, or are -1 for images directly in `path`.
    """
    root = os.path.abspath(os.path.expanduser(path))
    files, labels, classes = list_image_files(root)
    if not files:
        raise ValueError(
            f"No images found under '{path}' (looked recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)}, any case)."
        )
    return source_from_files(root, files, labels, classes, num_channels, full_check)


def source_from_files(root, files, labels, class_names, num_channels=None, full_check=None, name=None):
    """A `Source` of listed image files with their labels (unreadable ones dropped and named).

    Args:
        root: str. Folder the files are under, for messages.
        files: list of str. Image paths.
        labels: list of int. Index in `class_names` of each file, -1 when unlabelled.
        class_names: sequence of str. Empty when unlabelled.
        num_channels: int or None. 1, 3 or 4; None means 3 (RGB).
        full_check: bool or None. See `load_image_folder`.
        name: str or None. For logs; defaults to `root`.

    Returns:
        `Source` with ImageNet's mean/std, `files` and `class_names` set.
    """
    num_channels = 3 if num_channels is None else num_channels
    check_num_channels(num_channels)
    full = len(files) <= FULL_CHECK_LIMIT if full_check is None else full_check
    problems, decoders, sizes = check_files(root, files, full)
    kept = [(f, l, d, s) for f, l, d, s in zip(files, labels, decoders, sizes) if f not in problems]
    if not kept:
        raise ValueError(f"None of the {len(files)} image files under '{root}' could be read.")
    paths, labels, decoders, sizes = zip(*kept)
    heights, widths = np.array(sizes, np.int32).T
    decode_fn, crop_decode_fn = _decoders(num_channels)
    return Source(
        num_examples=len(paths),
        num_classes=len(class_names) or None,
        num_channels=num_channels,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name=name or root,
        key_table=(np.array(paths), np.array(labels, np.int32), np.array(decoders, np.int32), heights, widths),
        decode_fn=decode_fn,
        crop_decode_fn=crop_decode_fn,
        class_names=tuple(class_names) or None,
        files=tuple(paths),
    )
