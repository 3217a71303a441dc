"""Decoding only the crop window of a JPEG gives the pixels, and the pipelines the batches, of the full decode."""

import dataclasses
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mae import data
from keras_mae.data import augment, jpeg_window
from tests.data.tfds_builders import prepare_tfds
from tests.run_app import backend_independent

pytestmark = backend_independent  # tf.data only


def _picture(height, width, seed):
    """Smooth colour ramps plus noise: edges in every channel, as photos have, so chroma upsampling matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack([x * 7 % 256, y * 5 % 256, (x + 2 * y) * 3 % 256], -1)
    return np.clip(0.7 * ramps + 0.3 * rng.integers(0, 256, (height, width, 3)), 0, 255).astype(np.uint8)


def _jpeg(pixels, mode, subsampling, progressive):
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "JPEG", quality=90, subsampling=subsampling,
                                               progressive=progressive)
    return buffer.getvalue()


@pytest.mark.parametrize("dct_method", ["INTEGER_ACCURATE", "INTEGER_FAST"])
@pytest.mark.parametrize("mode,subsampling,progressive", [
    ("RGB", 2, False), ("RGB", 2, True), ("RGB", 1, False), ("RGB", 0, False), ("L", 0, False), ("L", 0, True)])
def test_window_equals_the_full_decode_sliced(mode, subsampling, progressive, dct_method):
    channels = 1 if mode == "L" else 3
    worst_without_margin = 0
    for trial, (height, width) in enumerate([(37, 53), (64, 64), (121, 17), (90, 133)]):
        contents = _jpeg(_picture(height, width, trial), mode, subsampling, progressive)
        assert [int(s) for s in jpeg_window.jpeg_size(tf.constant(contents))] == [height, width]
        full = tf.io.decode_jpeg(contents, channels, dct_method=dct_method).numpy()
        boxes = [augment.sample_crop_box(height, width, tf.constant([trial, k], tf.int64)).numpy() for k in range(6)]
        boxes += [np.array([0, 0, height, width]), np.array([3, 1, 9, width - 1]), np.array([0, width - 5, 5, 5])]
        for top, left, h, w in boxes:
            window = jpeg_window.decode_jpeg_window(tf.constant(contents), [top, left, h, w], channels,
                                                    dct_method=dct_method).numpy()
            np.testing.assert_array_equal(window, full[top:top + h, left:left + w])
            bare = tf.image.decode_and_crop_jpeg(contents, [top, left, h, w], channels, dct_method=dct_method).numpy()
            worst_without_margin = max(worst_without_margin,
                                       np.abs(bare.astype(int) - full[top:top + h, left:left + w]).max())
    if mode == "RGB" and subsampling:  # what the one-column margin is for: subsampled chroma
        assert worst_without_margin > 0


def _mixed_folder(root):
    """JPEGs of every kind the fast decoder takes, plus files that go to Pillow (PNG, CMYK JPEG), in 2 classes."""
    kinds = [("RGB", 2, False), ("RGB", 0, True), ("L", 0, False), ("RGB", 1, False)]
    for i in range(14):
        folder = os.path.join(root, f"class_{i % 2}")
        os.makedirs(folder, exist_ok=True)
        pixels = _picture(30 + 7 * i, 60 - 3 * i, i)
        if i % 7 == 5:
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:02d}.png"))
        elif i % 7 == 6:
            Image.fromarray(pixels).convert("CMYK").save(os.path.join(folder, f"{i:02d}.jpg"), "JPEG")
        else:
            with open(os.path.join(folder, f"{i:02d}.jpg"), "wb") as f:
                f.write(_jpeg(pixels, *kinds[i % 4]))


def _batches(dataset, count):
    return [tuple(np.asarray(t) for t in batch) for batch in dataset.take(count)]


@pytest.mark.parametrize("num_channels", [3, 1])
@pytest.mark.parametrize("pipeline", [
    dict(steps_per_epoch=3), dict(steps_per_epoch=3, initial_epoch=1, initial_step=1),
    dict(steps_per_epoch=3, shard=(1, 2)), dict()])
def test_pretrain_batches_equal_those_of_the_full_decode(tmp_path, num_channels, pipeline):
    _mixed_folder(str(tmp_path))
    source = data.load_source(str(tmp_path), num_channels=num_channels)
    assert source.can_crop_decode
    assert sorted(set(source.key_table[2].tolist())) == [0, 1, 2]  # Pillow, grey JPEG and RGB JPEG decoders
    full_decode = dataclasses.replace(source, crop_decode_fn=None)
    assert not full_decode.can_crop_decode
    make = lambda s: data.make_pretrain_dataset(s, 24, batch_size=4, seed=3, with_labels=True,
                                                shuffle_buffer=8, **pipeline)
    windowed, full = _batches(make(source), 6), _batches(make(full_decode), 6)
    assert len(windowed) == len(full) == (6 if pipeline else 14 // 4)  # without steps_per_epoch: one pass
    for (images, labels), (expected_images, expected_labels) in zip(windowed, full):
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_array_equal(images, expected_images)


def test_cropped_examples_needs_a_window_decoder():
    source = data.load_source(np.zeros((4, 8, 8), np.uint8))
    assert not source.can_crop_decode
    with pytest.raises(ValueError, match="cannot decode crop windows"):
        source.cropped_examples(tf.data.Dataset.counter(), lambda h, w, s: [0, 0, h, w])


def test_a_file_changed_after_loading_is_dropped_not_fatal(tmp_path):
    _mixed_folder(str(tmp_path))
    source = data.load_source(str(tmp_path), num_channels=3)
    # Sizes come from the headers read at load; a JPEG and a PNG rewritten smaller since can't give those boxes.
    for name in ("class_0/00.jpg", "class_1/05.png"):
        Image.fromarray(_picture(3, 3, 0)).save(os.path.join(str(tmp_path), name))
    images = data.make_pretrain_dataset(source, 24, batch_size=1, seed=3)
    assert len(list(images)) == 12


@pytest.fixture(scope="module")
def jpeg_records(tmp_path_factory):
    """A prepared TFDS dataset of JPEG records (as ImageNet's), one PNG among them, in 2 classes."""
    tfds = pytest.importorskip("tensorflow_datasets")
    kinds = [("RGB", 2, False), ("RGB", 0, True), ("L", 0, False), ("RGB", 1, True)]

    def examples():
        for i in range(13):
            pixels = _picture(30 + 7 * i, 60 - 3 * i, i)
            if i == 5:  # stored as given: TFDS does not re-encode bytes
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, "PNG")
                yield buffer.getvalue(), i % 2
            else:
                yield _jpeg(pixels, *kinds[i % 4]), i % 2

    return prepare_tfds(tfds, "KerasMaeJpegRecordsTest", str(tmp_path_factory.mktemp("tfds_jpeg")),
                        {"train": examples}, num_classes=2, encoding_format="jpeg")


@pytest.mark.parametrize("num_channels", [3, 1])
@pytest.mark.parametrize("pipeline", [dict(steps_per_epoch=3), dict(steps_per_epoch=3, initial_epoch=1, initial_step=1)])
def test_tfds_jpeg_records_give_the_batches_of_the_full_decode(jpeg_records, num_channels, pipeline):
    source = data.load_source("tfds:keras_mae_jpeg_records_test", data_dir=jpeg_records, num_channels=num_channels)
    assert source.can_crop_decode
    full_decode = dataclasses.replace(source, crop_decode_fn=None)
    make = lambda s: data.make_pretrain_dataset(s, 24, batch_size=4, seed=3, with_labels=True,
                                                shuffle_buffer=8, **pipeline)
    windowed, full = _batches(make(source), 6), _batches(make(full_decode), 6)
    assert len(windowed) == len(full) == 6
    for (images, labels), (expected_images, expected_labels) in zip(windowed, full):
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_array_equal(images, expected_images)
