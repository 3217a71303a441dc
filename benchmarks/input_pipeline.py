"""Images/s of the pretraining input pipeline on a folder of real-size JPEGs at 224 px, per core.

    .venv/bin/python benchmarks/input_pipeline.py --num_images=2000 --threads=1,2

Makes a folder of `--num_images` JPEGs (300-500 px a side, quality 90, smooth random content with edges, so
they compress like photos) once under `--folder`, then times, with tf.data's private thread pool set to each
`--threads` value:

- `pipeline`: `keras_mae.data.make_pretrain_dataset` as pretraining runs it (read, decode only the crop window
  (`keras_mae/data/jpeg_window.py`), random resized crop 0.2-1 bicubic to 224, flip, batch as uint8 pixels,
  `normalize=False`: `apps/pretrain.py`'s model normalises them in its step);
- `pipeline_float`: the same, normalised on the host into float32 batches (`normalize=True`, the default, and what
  `apps/pretrain.py` ran before);
- `pipeline_full_decode`: the same batches with each JPEG decoded whole, then cropped (the pipeline before the
  window decode);
- `decode_then_crop` and `decode_and_crop`: the decode step alone on the same files and crop boxes, full decode
  then slice (what the pipeline does) against `tf.image.decode_and_crop_jpeg` (only the crop window's blocks,
  one column wider on each side), and the largest pixel difference between the two (0: the same pixels);
- `crop_resize`: full decode, slice and the pipeline's antialiased bicubic resize to 224, unbatched;
- `tfds_pipeline` and `tfds_pipeline_full_decode`: the pipeline and its full-decode twin on the same JPEGs written
  as a prepared TFDS dataset (`--records_dir`), the way `imagenet2012`'s records hold them: what `--dataset=tfds:...`
  runs on ImageNet (TFDS's own decode, `INTEGER_FAST`; the records' bytes read in large sequential files);
- `pillow`: the PyTorch reference's per-image work (torchvision's RandomResizedCrop on a PIL image: decode,
  crop, bicubic resize to 224), one Python thread.

`--autotune_rounds=N` times only the `pipeline` row, N rounds alternating tf.data's autotuning on and off (the
other rows: as the pipelines set it, off where the process has at most 16 CPUs, `keras_mae/data/autotune.py`);
`--normalize_rounds=N` times only `pipeline` and `pipeline_float`, N rounds alternating the two.
`--eval_rounds=N` times the evaluation input instead (what the downstream apps' feature passes and evaluations
read), N rounds, each pair going first in turn: `eval` (`make_eval_dataset`: decode, bicubic resize to 256, centre
crop 224, float32 batches normalised on the host; the resize computes the crop's pixels only) and `eval_uint8`
(the same as uint8 pixels, `normalize=False`); `eval_whole` and `eval_whole_uint8`, the same with the whole image
resized and then cut (the transform before 2026-12-08); and, on one thread, `pillow_eval` (the reference's
evaluation transform: decode, torchvision's Resize(256) bicubic, CenterCrop(224)).

Not a test: numbers go to BENCHMARKS.md. The target (issue 16): 250 images/s per core, so that a 16-core GPU host
feeds 3,400 images/s.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402


def make_folder(folder, num_images, seed=0):
    """`num_images` RGB JPEGs of 300-500 px a side in `folder/` (kept between runs)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        path = os.path.join(folder, f"{i:05d}.jpg")
        if os.path.exists(path):
            continue
        height, width = rng.integers(300, 501, 2)
        # Smooth colour fields plus a few hard-edged shapes: JPEG sizes of photos (tens of KB), not of noise.
        low = rng.uniform(0, 255, (height // 32 + 2, width // 32 + 2, 3)).astype(np.uint8)
        image = Image.fromarray(low).resize((int(width), int(height)), Image.Resampling.BICUBIC)
        pixels = np.asarray(image).copy()
        for _ in range(6):
            top, left = rng.integers(0, height - 40), rng.integers(0, width - 40)
            pixels[top:top + rng.integers(20, 120), left:left + rng.integers(20, 120)] = rng.integers(0, 256, 3)
        pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))[:num_images]


def with_threads(dataset, threads, autotune=None):
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    if autotune is not None:  # None: the pipeline's own (off where the process has at most 16 CPUs)
        options.autotune.enabled = autotune
    return dataset.with_options(options)


def rate(dataset, num_images, repeats=2):
    """Best images/s over `repeats` full passes (the first pass also warms the file cache).

    The clock stops at the last batch, before the iterator is deleted: deleting it may wait for tf.data's
    tuning thread (`keras_mae/data/autotune.py`), once per `fit` for a training input, not per batch."""
    best = 0.0
    for _ in range(repeats + 1):
        start, count, iterator = time.perf_counter(), 0, iter(dataset)
        for batch in iterator:
            count += int(batch.shape[0])
            if count >= num_images:
                break
        best = max(best, count / (time.perf_counter() - start))
        del iterator
    return best


def make_records(files, data_dir):
    """The JPEGs of `files` as a prepared TFDS dataset `keras_mae_jpeg_records` in `data_dir` (kept between runs).

    The records hold each file's bytes as they are, as `imagenet2012`'s do (an `Image` feature with
    `encoding_format="jpeg"`), one example per file, labels 0-999 in turn.
    """
    import tensorflow_datasets as tfds

    from tests.data.tfds_builders import prepare_tfds

    name = "keras_mae_jpeg_records"
    if os.path.isdir(os.path.join(data_dir, name, "1.0.0")):  # prepared earlier
        if tfds.builder(name, data_dir=data_dir).info.splits["train"].num_examples != len(files):
            raise SystemExit(f"{data_dir} holds records of another folder; pass another --records_dir.")
    else:
        prepare_tfds(tfds, "KerasMaeJpegRecords", data_dir, {"train": lambda: ((f, i % 1000) for i, f in enumerate(files))},
                     num_classes=1000, encoding_format="jpeg")
    return f"tfds:{name}"


def pipeline_rate(folder, num_images, threads, batch_size=64, window_decode=True, data_dir=None, repeats=2,
                  autotune=None, normalize=False):
    """Images/s of the pretraining pipeline on `folder` (a path or `tfds:NAME`, in `data_dir`); `window_decode=False`:
    the same batches, each JPEG decoded whole; `autotune=True` / `False`: with tf.data's autotuning on / off (None:
    as the pipeline sets it); `normalize=True`: float32 batches normalised on the host instead of uint8 pixels."""
    import dataclasses

    from keras_mae.data import load_source, make_pretrain_dataset

    source = load_source(folder, num_channels=3, data_dir=data_dir)
    if not window_decode:
        source = dataclasses.replace(source, crop_decode_fn=None)
    steps = num_images // batch_size
    dataset = make_pretrain_dataset(source, 224, batch_size, seed=0, steps_per_epoch=steps, normalize=normalize)
    return rate(with_threads(dataset, threads, autotune), steps * batch_size, repeats)


def eval_rate(folder, num_images, threads, batch_size=64, normalize=True, whole=False, repeats=2):
    """Images/s of `make_eval_dataset` on `folder` (resize, centre crop to 224); `normalize=False`: uint8 batches;
    `whole=True`: the whole image resized, then cut (`resize_then_crop`)."""
    from keras_mae.data import augment, load_source, make_eval_dataset

    source = load_source(folder, num_channels=3)
    crop_only = augment.resize_center_crop
    augment.resize_center_crop = resize_then_crop if whole else crop_only
    try:  # the transform is read when the dataset is built
        dataset = make_eval_dataset(source, 224, batch_size, with_labels=False, normalize=normalize)
    finally:
        augment.resize_center_crop = crop_only
    return rate(with_threads(dataset, threads), (num_images // batch_size) * batch_size, repeats)


def resize_then_crop(image, size, crop_fraction=0.875):
    """The evaluation transform as it was before 2026-12-08: every pixel of the resized image, then the centre cut."""
    from keras_mae.data import augment

    shape = tf.shape(image)
    new_h, new_w, top, left = augment.center_crop_geometry(tf.cast(shape[0], tf.float32),
                                                           tf.cast(shape[1], tf.float32), size, crop_fraction)
    resized = augment.resize(image, tf.cast(tf.stack([new_h, new_w]), tf.int32))
    cut = tf.slice(resized, tf.cast(tf.stack([top, left, 0.0]), tf.int32), [size[0], size[1], -1])
    return tf.ensure_shape(cut, [*size, image.shape[-1]])


def pillow_eval_rate(files):
    """Images/s of the reference's evaluation transform with Pillow: decode, shorter side to 256 bicubic, centre 224."""
    start = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width, height = image.size
            scale = 256 / min(width, height)
            width, height = max(256, int(width * scale)), max(256, int(height * scale))
            image = image.resize((width, height), Image.Resampling.BICUBIC)
            left, top = int(round((width - 224) / 2)), int(round((height - 224) / 2))
            image.crop((left, top, left + 224, top + 224)).tobytes()
    return len(files) / (time.perf_counter() - start)


def decode_rates(files, threads, seed=0):
    """(images/s of decode then slice, of decode_and_crop, max pixel difference) on the pipeline's crop boxes."""
    from keras_mae.data import augment, jpeg_window

    def box(contents, index):
        shape = tf.io.extract_jpeg_shape(contents)
        return augment.sample_crop_box(shape[0], shape[1], tf.stack([tf.constant(seed, tf.int64), index]))

    def full(path, index):
        contents = tf.io.read_file(path)
        b = box(contents, index)
        image = tf.io.decode_jpeg(contents, 3, dct_method="INTEGER_ACCURATE")
        return tf.slice(image, [b[0], b[1], 0], [b[2], b[3], -1])

    def window(path, index):
        contents = tf.io.read_file(path)
        return jpeg_window.decode_jpeg_window(contents, box(contents, index), 3)

    def crop_resize(path, index):
        return augment.resize(full(path, index), (224, 224))

    indexed = tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(files), tf.data.Dataset.range(len(files)))
    rates = []
    for fn in (full, window, crop_resize):
        # Each image resized to a fixed size so it batches; the same cheap resize for both.
        ds = indexed.map(lambda p, i, fn=fn: tf.image.resize(fn(p, i), (8, 8), "nearest"),
                         num_parallel_calls=threads).batch(64)
        rates.append(rate(with_threads(ds, threads), len(files)))
    worst = 0
    for path, index in indexed:
        worst = max(worst, int(tf.reduce_max(tf.abs(tf.cast(full(path, index), tf.int32)
                                                    - tf.cast(window(path, index), tf.int32)))))
    return (*rates, worst)


def pillow_rate(files, seed=0):
    """Images/s of decode, crop (the same boxes' sizes drawn by numpy) and bicubic resize to 224 with Pillow."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width, height = image.size
            area = rng.uniform(0.2, 1.0) * width * height
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w = int(min(width, round(np.sqrt(area * ratio))))
            h = int(min(height, round(np.sqrt(area / ratio))))
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            image.crop((left, top, left + w, top + h)).resize((224, 224), Image.Resampling.BICUBIC)
    return len(files) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default="/tmp/keras_mae_jpegs")
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--records_dir", default="/tmp/keras_mae_jpeg_records",
                        help="Where the folder's JPEGs are written as TFDS records (the `tfds:` rows); '' skips them.")
    parser.add_argument("--autotune_rounds", type=int, default=0,
                        help="Only the `pipeline` row, this many rounds alternating tf.data's autotuning on and off.")
    parser.add_argument("--normalize_rounds", type=int, default=0,
                        help="Only `pipeline` and `pipeline_float`, this many rounds alternating the two.")
    parser.add_argument("--eval_rounds", type=int, default=0,
                        help="Only the evaluation input (`eval`, `eval_whole`, uint8 twins, `pillow_eval`), this many rounds.")
    args = parser.parse_args()
    for name in ("autotune_rounds", "normalize_rounds", "eval_rounds"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0 (0 runs every row). Received: {getattr(args, name)}")
    files = make_folder(args.folder, args.num_images)
    if args.normalize_rounds:
        rows = []
        for round_ in range(args.normalize_rounds):
            for threads in map(int, args.threads.split(",")):
                row = dict(round=round_, threads=threads)
                pair = (("pipeline", False), ("pipeline_float", True))
                for name, normalize in pair if round_ % 2 == 0 else pair[::-1]:  # each goes first in turn
                    row[name] = round(pipeline_rate(args.folder, len(files), threads, normalize=normalize), 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
        return rows
    if args.eval_rounds:
        rows = []
        for round_ in range(args.eval_rounds):
            for threads in map(int, args.threads.split(",")):
                row = dict(round=round_, threads=threads)
                pair = (("eval", False), ("eval_whole", True))
                for name, whole in pair if round_ % 2 == 0 else pair[::-1]:  # each goes first in turn
                    for suffix, normalize in (("", True), ("_uint8", False)):
                        row[name + suffix] = round(eval_rate(args.folder, len(files), threads, normalize=normalize,
                                                             whole=whole), 1)
                if threads == 1:
                    row["pillow_eval"] = round(pillow_eval_rate(files), 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
        return rows
    if args.autotune_rounds:
        rows = []
        for round_ in range(args.autotune_rounds):
            for autotune in (True, False):
                for threads in map(int, args.threads.split(",")):
                    rows.append(dict(round=round_, autotune=autotune, threads=threads,
                                     pipeline=round(pipeline_rate(args.folder, len(files), threads, autotune=autotune), 1)))
                    print(json.dumps(rows[-1]), flush=True)
        return rows
    sizes = [os.path.getsize(f) for f in files]
    print(f"{len(files)} JPEGs, {np.mean(sizes) / 1024:.0f} KiB each on average; {os.cpu_count()} cores")
    records = args.records_dir and make_records(files, args.records_dir)
    results = []
    for threads in map(int, args.threads.split(",")):
        full, window, resized, worst = decode_rates(files, threads)
        row = dict(threads=threads, pipeline=pipeline_rate(args.folder, len(files), threads),
                   pipeline_float=pipeline_rate(args.folder, len(files), threads, normalize=True),
                   pipeline_full_decode=pipeline_rate(args.folder, len(files), threads, window_decode=False),
                   decode_then_crop=full, decode_and_crop=window, max_pixel_difference=worst, crop_resize=resized)
        if records:  # ImageNet-style TFDS records of the same JPEGs (TFDS's own decode: INTEGER_FAST)
            for window in (True, False):
                row["tfds_pipeline" + ("" if window else "_full_decode")] = pipeline_rate(
                    records, len(files), threads, window_decode=window, data_dir=args.records_dir, repeats=4)
        if threads == 1:
            row["pillow"] = pillow_rate(files)
        results.append(row)
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}))
    return results


if __name__ == "__main__":
    main()
