"""Tests for keras_mae.data: sources, augmentation and the batched pipelines.

Run once per backend: `KERAS_BACKEND=jax python -m pytest tests/data -q`.
"""

import gzip
import logging
import os
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mae import data
from keras_mae.data import augment, builtin, image_folder
from keras_mae.layers.pixel_normalization import normalize_pixels
from tests.data.tfds_builders import prepare_tfds
from tests.run_app import backend_independent

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _save(path, array, mode=None, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode).save(path, fmt)


def _examples(ds):
    return [(np.asarray(image), int(label)) for image, label in ds]


# === Sources: image folders ===


def test_folder_with_class_subfolders(tmp_path):
    _save(str(tmp_path / "cat" / "a.png"), np.zeros((5, 7, 3), np.uint8))
    _save(str(tmp_path / "dog" / "b.JPG"), np.zeros((9, 4, 3), np.uint8), fmt="JPEG")
    _save(str(tmp_path / "dog" / "deep" / "c.webp"), np.zeros((6, 6, 3), np.uint8))
    (tmp_path / "dog" / "notes.txt").write_text("not an image extension: ignored")
    source = data.load_source(str(tmp_path))
    assert (source.num_examples, source.num_classes, source.num_channels) == (3, 2, 3)
    examples = _examples(source.dataset)
    assert [label for _, label in examples] == [0, 1, 1]
    assert [image.shape for image, _ in examples] == [(5, 7, 3), (9, 4, 3), (6, 6, 3)]


def test_folder_without_subfolders_is_unlabelled(tmp_path):
    for i in range(3):
        _save(str(tmp_path / f"{i}.bmp"), np.full((4, 4), i, np.uint8))
    source = data.load_source(str(tmp_path), num_channels=1)
    assert source.num_classes is None
    assert [label for _, label in _examples(source.dataset)] == [-1, -1, -1]


def _write_modes(root):
    """One image per Pillow mode we promise to read; returns expected RGB of pixel (0, 0)."""
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0] = 200
    _save(f"{root}/rgb.png", rgb)
    _save(f"{root}/gray.png", np.full((6, 5), 90, np.uint8))
    _save(f"{root}/rgba.png", np.dstack([rgb, np.full((6, 5), 7, np.uint8)]))
    _save(f"{root}/gray16.png", np.full((6, 5), 128 * 257, np.uint16))  # 16-bit grey -> 128.
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    palette.save(f"{root}/palette.gif")
    Image.new("CMYK", (5, 6), (0, 255, 255, 0)).save(f"{root}/cmyk.jpg", quality=100)
    return {"rgb": 200, "gray": 90, "rgba": 200, "gray16": 128, "palette": 200, "cmyk": 255}


@pytest.mark.parametrize("num_channels", [1, 3, 4])
def test_channel_conversion(tmp_path, num_channels):
    expected = _write_modes(str(tmp_path))
    names = sorted(expected)  # The folder's sorted file order.
    source = data.load_source(str(tmp_path), num_channels=num_channels)
    images = [image for image, _ in _examples(source.dataset)]
    assert len(images) == len(names)
    for name, image in zip(names, images):
        assert image.shape == (6, 5, num_channels) and image.dtype == np.uint8, name
        if num_channels == 3 or name in ("gray", "gray16"):
            assert abs(int(image[0, 0, 0]) - expected[name]) <= 2, name
    if num_channels == 4:
        assert images[names.index("rgba")][0, 0, 3] == 7
        assert images[names.index("rgb")][0, 0, 3] == 255


def test_jpegs_decoded_by_tensorflow_match_pillow(tmp_path):
    pixels = np.random.RandomState(0).randint(0, 255, (24, 20, 3)).astype(np.uint8)
    _save(str(tmp_path / "a_rgb.jpg"), pixels, fmt="JPEG")
    _save(str(tmp_path / "b_gray.jpg"), pixels[..., 0], fmt="JPEG")
    for num_channels in (3, 1):
        source = data.load_source(str(tmp_path), num_channels=num_channels)
        for name, (image, _) in zip(("a_rgb.jpg", "b_gray.jpg"), _examples(source.dataset)):
            pillow = data.read_image(str(tmp_path / name), num_channels).astype(int)
            assert np.abs(image.astype(int) - pillow).max() <= 1, (name, num_channels)


def _write_bad_folder(root):
    _save(f"{root}/good.png", np.full((20, 20, 3), 100, np.uint8))
    _save(f"{root}/tiny.png", np.full((2, 3, 3), 50, np.uint8))
    buffer = np.random.RandomState(0).randint(0, 255, (64, 64, 3)).astype(np.uint8)
    _save(f"{root}/whole.jpg", buffer, fmt="JPEG")
    with open(f"{root}/whole.jpg", "rb") as f:
        jpeg = f.read()
    with open(f"{root}/truncated.jpg", "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    open(f"{root}/empty.jpg", "wb").close()
    with open(f"{root}/text.jpg", "w") as f:
        f.write("this is not a JPEG")
    os.remove(f"{root}/whole.jpg")


def test_bad_files_are_skipped_and_named_once(tmp_path, caplog):
    _write_bad_folder(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        source = data.load_source(str(tmp_path))
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith(f"Skipped 3 unreadable files of 5 under {tmp_path}:")
    for name in ("truncated.jpg", "empty.jpg", "text.jpg"):
        assert name in lines[0]
    assert source.num_examples == 2
    # The tiny 2x3 image is enlarged by the crop.
    batch = next(iter(data.make_pretrain_dataset(source, 16, batch_size=2)))
    assert batch.shape == (2, 16, 16, 3)


def test_lazy_check_drops_truncated_files_in_the_pipeline_and_names_them(tmp_path, caplog):
    _write_bad_folder(str(tmp_path))
    _save(f"{tmp_path}/whole.jpg", np.random.RandomState(1).randint(0, 255, (32, 32, 3)).astype(np.uint8), fmt="JPEG")
    image_folder._WARNED.clear()
    source = image_folder.load_image_folder(str(tmp_path), full_check=False)
    assert source.num_examples == 4  # The header check lets the truncated JPEG through,
    # ... but not to TensorFlow's fast JPEG decoder (whose error names no file): whole JPEGs only go there.
    assert dict(zip(source.files, source.key_table[2])) == {
        f"{tmp_path}/{name}": decoder for name, decoder in
        (("good.png", 0), ("tiny.png", 0), ("truncated.jpg", 0), ("whole.jpg", 2))}
    with caplog.at_level(logging.WARNING):
        assert len(_examples(source.dataset)) == 3  # the pipeline's decode drops it, naming it.
    # So does pretraining's decode of crop windows.
    assert source.can_crop_decode and len(list(data.make_pretrain_dataset(source, 16, batch_size=1))) == 3
    (line,) = [r.getMessage() for r in caplog.records if "truncated.jpg" in r.getMessage()]
    assert line.startswith(f"Skipped unreadable file {tmp_path}/truncated.jpg (OSError: image file is truncated")


def test_summary_line_is_truncated(tmp_path, caplog):
    _save(str(tmp_path / "ok.png"), np.zeros((4, 4, 3), np.uint8))
    for i in range(12):
        open(tmp_path / f"bad{i:02d}.png", "wb").close()
    with caplog.at_level(logging.WARNING):
        data.load_source(str(tmp_path))
    (line,) = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert "bad09.png" in line and "bad10.png" not in line and line.endswith("... and 2 more")


# === Sources: arrays, npz, builtin, TFDS ===


def test_numpy_arrays():
    images = np.random.RandomState(0).rand(6, 8, 9, 3).astype(np.float32)  # Floats in [0, 1].
    source = data.load_source((images, np.arange(6) % 4))
    assert (source.num_examples, source.num_classes, source.num_channels) == (6, 4, 3)
    first, label = next(iter(source.dataset))
    np.testing.assert_array_equal(first, np.rint(images[0] * 255).astype(np.uint8))
    assert first.dtype == tf.uint8 and label == 0
    gray = data.load_source(np.full((2, 5, 5), 200.0), num_channels=3)  # Floats in [0, 255].
    image, label = next(iter(gray.dataset))
    assert image.shape == (5, 5, 3) and int(image[0, 0, 2]) == 200 and label == -1
    assert gray.mean == pytest.approx(data.IMAGENET_MEAN)
    back = data.load_source(gray, num_channels=1)  # A Source converts again, lazily.
    assert back.mean == pytest.approx((np.mean(data.IMAGENET_MEAN),))
    assert next(iter(back.dataset))[0].shape == (5, 5, 1)


def test_npz(tmp_path):
    images = np.random.RandomState(0).randint(0, 255, (4, 6, 6, 1), np.uint8)
    np.savez(tmp_path / "plain.npz", images=images)
    np.savez(tmp_path / "keras.npz", x_train=images, y_train=np.arange(4),
             x_test=images[:1], y_test=np.array([7]))
    assert data.load_source(str(tmp_path / "plain.npz")).num_classes is None
    test = data.load_source(str(tmp_path / "keras.npz"), split="test")
    assert test.num_examples == 1 and _examples(test.dataset)[0][1] == 7
    assert data.load_source(str(tmp_path / "keras.npz")).num_examples == 4
    np.savez(tmp_path / "odd.npz", pixels=images)
    with pytest.raises(ValueError, match="No image array for split 'train'.*keys: pixels"):
        data.load_source(str(tmp_path / "odd.npz"))


def test_read_idx_tiny_file(tmp_path):
    values = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    raw = struct.pack(">BBBB3I", 0, 0, 0x0C, 3, 2, 3, 4) + values.tobytes()
    with gzip.open(tmp_path / "t.idx.gz", "wb") as f:
        f.write(raw)
    (tmp_path / "t.idx").write_bytes(raw)
    for name in ("t.idx.gz", "t.idx"):
        np.testing.assert_array_equal(data.read_idx(str(tmp_path / name)), values)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(str(tmp_path / "bad.idx"))


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="Debian fashion-mnist not installed")
def test_real_fashion_mnist():
    train, test = data.load_source("fashion_mnist"), data.load_source("fashion-mnist", "test")
    assert (train.num_examples, test.num_examples, train.num_classes) == (60000, 10000, 10)
    labels = data.read_idx(f"{FASHION_DIR}/train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    images = data.read_idx(f"{FASHION_DIR}/train-images-idx3-ubyte.gz") / 255.0
    assert train.mean[0] == pytest.approx(images.mean(), abs=1e-4)
    assert train.std[0] == pytest.approx(images.std(), abs=1e-4)
    _, labels = next(iter(data.make_eval_dataset("fashion_mnist", 28, 500)))
    assert np.asarray(labels).min() >= 0 and np.asarray(labels).max() <= 9


def test_builtin_falls_back_to_keras_datasets(monkeypatch):
    fake = (np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3]))
    monkeypatch.setattr(builtin, "LOCAL_IDX_DIRS", {})
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: (fake, fake))
    source = data.load_source("mnist", num_channels=3)
    assert source.num_examples == 3 and source.mean == pytest.approx((0.1307,) * 3)


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    """A local 5 + 2 example dataset: no download."""
    tfds = pytest.importorskip("tensorflow_datasets")
    examples = lambda count: lambda: ((np.full((8 + i, 6, 3), 30 * i, np.uint8), i % 3) for i in range(count))
    return prepare_tfds(tfds, "KerasMaeTinyTest", str(tmp_path_factory.mktemp("tfds")),
                        {"train": examples(5), "test": examples(2)}, num_classes=3)


def test_tfds_prepared_dataset(tiny_tfds, tmp_path):
    source = data.load_source("tfds:keras_mae_tiny_test", data_dir=tiny_tfds, num_channels=1)
    assert (source.num_examples, source.num_classes, source.num_channels) == (5, 3, 1)
    examples = _examples(source.dataset)
    assert sorted(label for _, label in examples) == [0, 0, 1, 1, 2]
    assert all(image.shape == (8 + image[0, 0, 0] // 30, 6, 1) for image, _ in examples)
    test = data.make_eval_dataset("tfds:keras_mae_tiny_test:test", 8, 4, data_dir=tiny_tfds)
    assert next(iter(test))[0].shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="'keras_mae_tiny_test' is not prepared in .*tfds build"):
        data.load_source("tfds:keras_mae_tiny_test", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown TFDS dataset 'no_such_dataset_xyz'"):
        data.load_source("tfds:no_such_dataset_xyz")


# === Augmentation ===


def test_pretrain_batches_and_normalisation_of_a_constant_image():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    images = np.full((4, 40, 30, 3), 153, np.uint8)  # 153 / 255 = 0.6.
    ds = data.make_pretrain_dataset(images, (16, 24), batch_size=4, mean=mean, std=std)
    assert ds.element_spec.shape == (4, 16, 24, 3)  # Static: jit compiles once.
    batch = next(iter(ds))
    assert batch.shape == (4, 16, 24, 3) and batch.dtype == tf.float32
    expected = (0.6 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(np.asarray(batch), np.broadcast_to(expected, batch.shape), atol=1e-4)


def test_same_seed_same_batch_other_seed_or_epoch_differs():
    images = np.random.RandomState(0).randint(0, 255, (32, 20, 20, 3), np.uint8)
    make = lambda seed: data.make_pretrain_dataset(images, 12, 8, seed=seed, with_labels=True)
    first, again, other = (next(iter(make(s)))[0] for s in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    ds = make(3)
    epochs = [np.concatenate([np.asarray(x) for x, _ in ds]) for _ in range(2)]
    assert not np.allclose(epochs[0], epochs[1])


def test_crop_boxes_follow_the_mae_ranges():
    boxes = np.stack([augment.sample_crop_box(60, 80, tf.constant([s, 0])) for s in range(200)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 60).all() and (left + w <= 80).all()
    area = h * w / (60 * 80)
    # Mean area: 0.499 in a 20,000-draw simulation of torchvision's loop (big crops fit less often).
    assert area.min() >= 0.19 and area.max() <= 1 and area.mean() == pytest.approx(0.5, abs=0.04)
    assert (w / h).min() >= 0.7 and (w / h).max() <= 1.4  # 3/4 to 4/3, up to rounding.
    # No attempt fits a 10x200 strip: the fallback is the centred 10x13 (ratio 4/3) box.
    np.testing.assert_array_equal(augment.sample_crop_box(10, 200, tf.constant([0, 0])), [0, 93, 10, 13])


def test_random_resized_crop_matches_pillow_on_the_full_image():
    image = np.random.RandomState(1).randint(0, 255, (90, 100, 3)).astype(np.uint8)
    whole = augment.random_resized_crop(image, (20, 24), tf.constant([1, 2]), (1, 1), (100 / 90,) * 2)
    pillow = np.asarray(Image.fromarray(image).resize((24, 20), Image.BICUBIC), np.float32)
    assert np.abs(np.asarray(whole) - pillow).mean() < 1.0


@backend_independent  # tf ops inside tf.data: the same on every backend
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_resize_of_uint8_pixels_equals_resize_of_their_float_cast(channels):
    # resize() hands uint8 crops to the kernels uncast (no float copy); shrinking (antialiased) and enlarging alike.
    rng = np.random.RandomState(channels)
    for height, width, size in [(300, 410, (224, 224)), (150, 90, (224, 224)), (230, 100, (224, 224)), (7, 5, (3, 9))]:
        image = rng.randint(0, 256, (height, width, channels)).astype(np.uint8)
        from_uint8 = augment.resize(image, size)
        assert from_uint8.dtype == tf.float32 and from_uint8.shape == (*size, channels)
        np.testing.assert_array_equal(from_uint8, augment.resize(image.astype(np.float32), size))
        assert 0 <= np.min(from_uint8) and np.max(from_uint8) <= 255


@backend_independent  # tf.data yields the same on every backend
def test_uint8_batches_are_the_pixels_of_the_float_batches(tmp_path):
    # normalize=False: the pixels the float pipeline normalises (Pillow's rounding), for the model to normalise.
    rng = np.random.RandomState(4)
    images = rng.randint(0, 256, (24, 37, 29, 3)).astype(np.uint8)
    folder = tmp_path / "jpegs"  # JPEGs: the window decode's own path
    folder.mkdir()
    for i, image in enumerate(images[:8]):
        Image.fromarray(image).save(folder / f"{i}.jpg", quality=90)
    mean, std = (0.3, 0.45, 0.5), (0.2, 0.25, 0.3)
    cases = [(images, data.make_pretrain_dataset, dict(seed=5, with_labels=True)),
             (images, data.make_pretrain_dataset, dict(seed=5, steps_per_epoch=2)),
             (str(folder), data.make_pretrain_dataset, dict(seed=6)),
             (images, data.make_eval_dataset, dict(with_labels=False))]
    for source, make, options in cases:
        pixels, floats = (next(iter(make(source, (16, 24), 4, mean=mean, std=std, normalize=normalize, **options)))
                          for normalize in (False, True))
        if options.get("with_labels"):
            (pixels, labels), (floats, float_labels) = pixels, floats
            np.testing.assert_array_equal(labels, float_labels)
        assert pixels.dtype == tf.uint8 and floats.dtype == tf.float32 and pixels.shape == floats.shape
        np.testing.assert_array_equal(data.normalize(pixels, mean, std), floats)
        # On the device, with keras.ops, the same model inputs.
        on_device = normalize_pixels(keras.ops.convert_to_tensor(np.asarray(pixels)), mean, std)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(on_device), floats, rtol=0, atol=1e-6)
        assert len(np.unique(np.asarray(pixels))) > 100  # real crops, not a constant
    with pytest.raises(ValueError, match="normalize must be True .* Received: normalize='no'"):
        data.make_pretrain_dataset(images, 16, 4, normalize="no")


def test_eval_transform_resizes_shorter_side_then_centre_crops():
    image = tf.constant(np.random.RandomState(2).randint(0, 256, (128, 256, 3)), tf.float32)
    # 112 / 0.875 = 128: the shorter side is already 128, so this is a pure centre crop.
    np.testing.assert_allclose(augment.resize_center_crop(image, (112, 112)),
                               image[8:120, 72:184], atol=1e-3)
    np.testing.assert_array_equal(augment.resize_center_crop(image, (128, 256)), image)
    assert augment.resize_center_crop(image[:5, :3], (16, 16)).shape == (16, 16, 3)


@backend_independent  # tf ops on the host
def test_eval_transform_computes_only_the_crop_as_resize_then_crop_would():
    # Shrinking, only the crop's pixels are resampled (augment.shrunk_window); resize-then-slice is the definition.
    # Its sample positions round differently in float32, so a value may land on the other side of a half level and
    # round to its neighbour; none may differ otherwise.
    rng = np.random.RandomState(7)
    size = (224, 224)
    for (height, width), channels, dtype in [((300, 451), 3, np.uint8), ((389, 389), 1, np.uint8),
                                              ((512, 300), 4, np.float32), ((257, 1000), 3, np.uint8),
                                              ((100, 150), 3, np.uint8), ((230, 600), 3, np.float32)]:
        image = rng.randint(0, 256, (height, width, channels)).astype(dtype)
        scale = max(256 / height, 256 / width)
        new_h, new_w = max(int(height * scale + 1e-4), 256), max(int(width * scale + 1e-4), 256)
        top, left = round((new_h - 224) / 2), round((new_w - 224) / 2)
        window = slice(top, top + 224), slice(left, left + 224)
        expected = augment.resize(image, (new_h, new_w)).numpy()[window]
        output = augment.resize_center_crop(tf.constant(image), size).numpy()
        assert output.shape == (*size, channels) and output.dtype == np.float32
        if new_h > height:  # enlarging: the whole image is resized, then cut
            np.testing.assert_array_equal(output, expected)
            continue
        unrounded = np.clip(tf.image.resize(image, (new_h, new_w), "bicubic", antialias=True).numpy()[window], 0, 255)
        differ = output != expected
        assert np.abs(output - expected).max() <= 1 and differ.mean() < 2e-3
        np.testing.assert_array_less(np.abs(unrounded[differ] % 1 - 0.5), 0.05)  # only at a rounding boundary
        np.testing.assert_array_equal(output, np.round(output))  # whole pixels, as resize's


def test_denormalize_inverts_normalisation_and_keras_takes_the_batches():
    images = np.random.RandomState(3).randint(0, 255, (10, 8, 8), np.uint8)
    ds = data.make_eval_dataset((images, np.arange(10) % 2), 8, batch_size=4)
    batches = list(ds)
    assert [len(y) for _, y in batches] == [4, 4, 2]  # Nothing dropped, in order.
    x = keras.ops.convert_to_tensor(np.asarray(batches[0][0]))
    source = data.load_source(images)  # Grey: ImageNet's statistics averaged to one channel.
    assert source.mean == pytest.approx((np.mean(data.IMAGENET_MEAN),))
    restored = data.denormalize(keras.ops.convert_to_numpy(x), source.mean, source.std)
    np.testing.assert_allclose(restored[..., 0] * 255, images[:4], atol=1e-3)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


# === Errors ===


def test_error_messages(tmp_path):
    kinds = "pass a folder of images, a .npz file, tfds:NAME or one of fashion_mnist, mnist, cifar10, cifar100."
    with pytest.raises(ValueError) as error:
        data.load_source("/x")
    assert str(error.value) == f"Data path '/x' does not exist; {kinds}"
    with pytest.raises(ValueError, match=r"^Unknown dataset 'imagenet'; pass a folder"):
        data.load_source("imagenet")
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"No images found under .* \.jpg, \.jpeg, \.png, \.bmp, \.gif, \.webp"):
        data.load_source(str(tmp_path))
    for bad in (0, 2, 5, "3"):
        with pytest.raises(ValueError, match=f"num_channels=.*{bad}"):
            data.make_pretrain_dataset("fashion_mnist", 28, 8, num_channels=bad)
    with pytest.raises(ValueError, match="Unknown split 'val' for fashion_mnist"):
        data.load_source("fashion_mnist", split="val")
    with pytest.raises(ValueError, match="image_size must be"):
        data.make_eval_dataset(np.zeros((2, 4, 4), np.uint8), (0, 4), 2)
    with pytest.raises(ValueError, match=r"shape \(N, H, W\) or \(N, H, W, C\)"):
        data.load_source(np.zeros((2, 4, 4, 2), np.uint8))


def test_folder_reads_each_real_file_once_and_names_non_utf8_files(tmp_path, caplog):
    from keras_mae.data.image_folder import list_image_files

    for name in ("cat/a.png", "dog/b.png"):
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        _save(str(tmp_path / name), np.zeros((4, 4, 3), np.uint8))
    os.symlink(tmp_path, tmp_path / "cat" / "self")  # a loop: cat/self/cat/self/...
    os.symlink(tmp_path / "dog" / "b.png", tmp_path / "dog" / "c.png")  # a second path to one file
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    _save(os.path.join(str(tmp_path / "dog"), odd), np.zeros((4, 4, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        files, labels, classes = list_image_files(str(tmp_path))
    assert [os.path.relpath(f, tmp_path) for f in files] == ["cat/a.png", "dog/b.png"]
    assert classes == ["cat", "dog"] and labels == [0, 1]
    assert "Skipped 1 files under" in caplog.text and "caf\\xe9.png" in caplog.text


@backend_independent  # tf.data options, the same on every backend
def test_inputs_end_without_waiting_for_the_tuning_thread(monkeypatch):
    # make_eval_dataset's iterator is deleted after every pass (Keras's evaluate / predict): tf.data's autotuning
    # is off there, as its deletion can wait out the tuning thread's sleep (keras_mae/data/autotune.py).
    # Training inputs, whose iterator lives for a whole fit, keep it only where it can raise the parallelism.
    from keras_mae.data import autotune
    from keras_mae.data.classification import make_classification_dataset

    images = np.random.RandomState(0).randint(0, 256, (10, 12, 12, 3)).astype(np.uint8)
    labels = np.arange(10) % 3
    evaluation = [data.make_eval_dataset((images, labels), 8, 4),
                  data.make_eval_dataset((images, labels), 8, 4, with_labels=False, normalize=False),
                  data.make_eval_dataset((images, labels), 8, 4, shard=(1, 2))]
    for dataset in evaluation:
        assert dataset.options().autotune.enabled is False

    def training():
        return [data.make_pretrain_dataset(images, 8, 4), data.make_pretrain_dataset(images, 8, 4, steps_per_epoch=2),
                make_classification_dataset((images, labels), 8, 4)]

    for cpus, enabled in ((2, False), (16, False), (17, None), (64, None)):
        monkeypatch.setattr(autotune, "process_cpus", lambda: cpus)
        assert [d.options().autotune.enabled for d in training()] == [enabled] * 3, cpus
    monkeypatch.undo()
    assert autotune.process_cpus() == len(os.sched_getaffinity(0))
    # The batches are those of the same pipeline with autotuning on.
    on = tf.data.Options()
    on.autotune.enabled = True
    for left, right in zip(evaluation[0], evaluation[0].with_options(on)):
        np.testing.assert_array_equal(left[0], right[0])
        np.testing.assert_array_equal(left[1], right[1])
    assert data.without_autotune(tf.data.Dataset.range(3)).options().autotune.enabled is False
