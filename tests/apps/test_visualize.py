"""apps/visualize.py end to end (subprocess), and the image-file helpers it uses."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import keras_mae
from keras_mae import data as image_files
from tests.run_app import backend_independent, run_app

TINY = dict(image_size=16, patch_size=4, num_channels=3, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32,
            decoder_hidden_dim=8, decoder_num_layers=1, decoder_num_heads=2, decoder_mlp_dim=16)


def photos(folder):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(os.path.join(folder, "a.png"))
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(os.path.join(folder, "b.png"))
    return folder


def visualize(*args):
    return run_app("visualize.py", *args, check=False)


@backend_independent  # files and flags; reconstruct on every backend: tests/models
@pytest.mark.slow
def test_official_checkpoint_to_figures(tmp_path):
    pytest.importorskip("torch")
    checkpoint = keras_mae.checkpoints.save_official(keras_mae.MaskedAutoencoder(**TINY), tmp_path / "tiny_mae.pth")
    out = tmp_path / "figures"
    result = visualize(f"--checkpoint={checkpoint}", f"--images={photos(tmp_path / 'photos')}", f"--output_dir={out}",
                     "--num_heads=2", "--decoder_num_heads=2", "--image_size=16,24", "--seed=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["a_mae.png", "b_mae.png"]
    for name in ("a_mae.png", "b_mae.png"):
        with Image.open(out / name) as figure:
            assert figure.size == (4 * 24 + 3 * 2, 16) and figure.mode == "RGB"  # 4 panels, 2-pixel gaps
    missing = visualize(f"--checkpoint={tmp_path / 'nope.pth'}", f"--images={tmp_path / 'photos'}", f"--output_dir={out}")
    assert missing.returncode == 2 and "--checkpoint" in missing.stderr and "does not exist" in missing.stderr
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(checkpoint, "rb").read()[:4000])
    corrupt = visualize(f"--checkpoint={truncated}", f"--images={tmp_path / 'photos'}", f"--output_dir={out}")
    assert corrupt.returncode == 2 and "Traceback" not in corrupt.stderr
    assert "truncated.pth" in corrupt.stderr and "truncated or corrupt" in corrupt.stderr


@backend_independent  # files and flags; reconstruct on every backend: tests/models
@pytest.mark.slow
def test_workdir_uses_its_model_and_normalisation(tmp_path):
    workdir = tmp_path / "run"
    os.makedirs(workdir)
    model = keras_mae.MaskedAutoencoder(**{**TINY, "num_channels": 1, "norm_pix_loss": True})
    model.save(workdir / "model.keras")
    with open(workdir / "run.json", "w") as f:
        json.dump({"model_config": {}, "mean": [0.5], "std": [0.25]}, f)
    out = tmp_path / "figures"
    result = visualize(f"--checkpoint={workdir}", f"--images={photos(tmp_path / 'photos')}", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "norm_pix_loss True" in result.stdout
    with Image.open(out / "a_mae.png") as figure:
        assert figure.size == (4 * 16 + 6, 16) and figure.mode == "L"


@backend_independent  # the maps on every backend: tests/models/test_attention.py
@pytest.mark.slow
def test_attention_maps_of_an_encoder_checkpoint(tmp_path):
    """--attention needs only an encoder: an official `mae_pretrain_vit_*`-layout file (no decoder)."""
    pytest.importorskip("torch")
    keys = ("image_size", "patch_size", "num_channels", "hidden_dim", "num_heads", "mlp_dim")
    encoder = keras_mae.ViTEncoder(**{k: TINY[k] for k in keys}, num_layers=2)
    checkpoint = keras_mae.checkpoints.save_official(encoder, tmp_path / "tiny_encoder.pth")
    out = tmp_path / "figures"
    args = (f"--checkpoint={checkpoint}", f"--images={photos(tmp_path / 'photos')}", f"--output_dir={out}",
            "--num_heads=2")
    refused = visualize(*args)
    assert refused.returncode == 2 and "--attention" in refused.stderr and "Traceback" not in refused.stderr
    result = visualize(*args, "--attention")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rollout over 2 blocks" in result.stdout
    assert sorted(os.listdir(out)) == ["a_attention.png", "b_attention.png"]
    with Image.open(out / "a_attention.png") as figure:
        assert figure.size == (3 * 16 + 2 * 2, 16) and figure.mode == "RGB"  # image | CLS attention | rollout
        pixels = np.asarray(figure)
    image, cls_map, rollout = pixels[:, :16], pixels[:, 18:34], pixels[:, 36:]
    assert np.abs(cls_map.astype(int) - image).max() > 30 and np.abs(rollout.astype(int) - cls_map).max() > 0


def test_find_and_read_images(tmp_path):
    folder = photos(tmp_path / "photos")
    files = image_files.find_images([folder])
    assert [os.path.basename(f) for f in files] == ["a.png", "b.png"]
    images = image_files.read_images(files, (8, 12), 3, image_files.IMAGENET_MEAN, image_files.IMAGENET_STD)
    assert images.shape == (2, 8, 12, 3) and images.dtype == np.float32
    gray = image_files.read_images(files[1:], (16, 16), 1, [0.0], [1.0])
    with Image.open(files[1]) as original:
        np.testing.assert_allclose(gray[0, :, :, 0], np.asarray(original, "float32") / 255.0, atol=1e-6)


def test_files_read_as_the_folder_pipeline_reads_them(tmp_path):
    """One reader: 16-bit grey and palette files give visualize the pixels training gets."""
    from keras_mae.data import read_image

    deep = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.fromarray(np.uint8(np.arange(64).reshape(8, 8) % 4)).convert("P").save(tmp_path / "palette.png")
    for name, channels in (("deep.png", 1), ("palette.png", 3)):
        path = str(tmp_path / name)
        pixels = read_image(path, channels)
        images = image_files.read_images([path], pixels.shape[:2], channels, [0.0], [1.0])
        np.testing.assert_allclose(images[0], pixels / 255.0, atol=1e-6)
    assert read_image(str(tmp_path / "deep.png"), 1).max() > 200  # 16-bit scaled, not clipped to white
    # ImageNet statistics fitted to grey: the channel mean, as the pipelines use.
    grey = image_files.read_images([str(tmp_path / "deep.png")], (8, 8), 1)
    raw = image_files.read_images([str(tmp_path / "deep.png")], (8, 8), 1, [0.0], [1.0])
    np.testing.assert_allclose(grey, (raw - np.mean(image_files.IMAGENET_MEAN)) / np.mean(image_files.IMAGENET_STD),
                               rtol=1e-5, atol=1e-5)


def test_image_errors_are_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Image path .*missing.* does not exist"):
        image_files.find_images([str(tmp_path / "missing")])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"No images .* found in .*empty"):
        image_files.find_images(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"mean/std have 1, 3 or 4 values .* Received: \[0.1, 0.2\]"):
        image_files.fit_normalization([0.1, 0.2], [1.0], 1)
    with pytest.raises(ValueError, match=r"std must be positive. Received: std=\[0.0\]"):
        image_files.fit_normalization([0.1], [0.0], 1)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"Cannot read image .*bad.png"):
        image_files.read_images([str(tmp_path / "bad.png")], (4, 4), 3, [0.5], [0.5])
