"""apps/visualize.py end to end (subprocess), and the image-file helpers it uses."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras_mae
from keras_mae.utils import image_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(image_size=16, patch_size=4, num_channels=3, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32,
            decoder_hidden_dim=8, decoder_num_layers=1, decoder_num_heads=2, decoder_mlp_dim=16)


def photos(folder):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(os.path.join(folder, "a.png"))
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(os.path.join(folder, "b.png"))
    return folder


def run_app(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "apps", "visualize.py"), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_official_checkpoint_to_figures(tmp_path):
    pytest.importorskip("torch")
    checkpoint = keras_mae.checkpoints.save_official(keras_mae.MaskedAutoencoder(**TINY), tmp_path / "tiny_mae.pth")
    out = tmp_path / "figures"
    result = run_app(f"--checkpoint={checkpoint}", f"--images={photos(tmp_path / 'photos')}", f"--output_dir={out}",
                     "--num_heads=2", "--decoder_num_heads=2", "--image_size=16,24", "--seed=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["a_mae.png", "b_mae.png"]
    for name in ("a_mae.png", "b_mae.png"):
        with Image.open(out / name) as figure:
            assert figure.size == (4 * 24 + 3 * 2, 16) and figure.mode == "RGB"  # 4 panels, 2-pixel gaps
    missing = run_app(f"--checkpoint={tmp_path / 'nope.pth'}", f"--images={tmp_path / 'photos'}", f"--output_dir={out}")
    assert missing.returncode == 2 and "--checkpoint" in missing.stderr and "does not exist" in missing.stderr


def test_workdir_uses_its_model_and_normalisation(tmp_path):
    workdir = tmp_path / "run"
    os.makedirs(workdir)
    model = keras_mae.MaskedAutoencoder(**{**TINY, "num_channels": 1, "norm_pix_loss": True})
    model.save(workdir / "model.keras")
    with open(workdir / "run.json", "w") as f:
        json.dump({"model_config": {}, "mean": [0.5], "std": [0.25]}, f)
    out = tmp_path / "figures"
    result = run_app(f"--checkpoint={workdir}", f"--images={photos(tmp_path / 'photos')}", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "norm_pix_loss True" in result.stdout
    with Image.open(out / "a_mae.png") as figure:
        assert figure.size == (4 * 16 + 6, 16) and figure.mode == "L"


def test_find_and_read_images(tmp_path):
    folder = photos(tmp_path / "photos")
    files = image_files.find_images([folder])
    assert [os.path.basename(f) for f in files] == ["a.png", "b.png"]
    images = image_files.read_images(files, (8, 12), 3, image_files.IMAGENET_MEAN, image_files.IMAGENET_STD)
    assert images.shape == (2, 8, 12, 3) and images.dtype == np.float32
    gray = image_files.read_images(files[1:], (16, 16), 1, [0.0], [1.0])
    with Image.open(files[1]) as original:
        np.testing.assert_allclose(gray[0, :, :, 0], np.asarray(original, "float32") / 255.0, atol=1e-6)


def test_image_errors_are_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Image path .*missing.* does not exist"):
        image_files.find_images([str(tmp_path / "missing")])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"No images .* found in .*empty"):
        image_files.find_images(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"mean has 3 values for 1-channel images"):
        image_files.check_normalisation([0.1, 0.2, 0.3], [1.0], 1)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"Cannot read image .*bad.png"):
        image_files.read_images([str(tmp_path / "bad.png")], (4, 4), 3, [0.5], [0.5])
