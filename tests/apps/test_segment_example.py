"""examples/segment_fashion_mnist.py: its mosaics and labels, and a short run end to end on real data."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest

from tests.run_app import FASHION_MNIST, ROOT, backend_independent, run_app

SCRIPT = os.path.join(ROOT, "examples", "segment_fashion_mnist.py")
needs_data = pytest.mark.skipif(not os.path.exists(FASHION_MNIST), reason="apt-get install dataset-fashion-mnist")


def _example():
    spec = importlib.util.spec_from_file_location("segment_fashion_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines no flags: they are defined only when it runs
    return module


@backend_independent
def test_mosaics_tile_items_row_major_and_label_each_pixel_with_its_item_class():
    example = _example()
    rng = np.random.default_rng(0)
    items = rng.uniform(size=(9, 4, 4)).astype("float32")
    labels = np.arange(9) % 10
    indices = np.array([[3, 1, 7, 0], [8, 8, 2, 5]])
    images, maps = example.mosaics(items, labels, indices, threshold=0.3)
    assert images.shape == (2, 8, 8, 1) and maps.shape == (2, 8, 8) and maps.dtype == np.int32
    for n, row in enumerate(indices):
        for k, item in enumerate(row):
            top, left = 4 * (k // 2), 4 * (k % 2)
            np.testing.assert_array_equal(images[n, top:top + 4, left:left + 4, 0], items[item])
            want = np.where(items[item] > 0.3, labels[item] + 1, 0)
            np.testing.assert_array_equal(maps[n, top:top + 4, left:left + 4], want)
    shrunk = example.resized(rng.integers(0, 256, (3, 28, 28)).astype("uint8"), 16)
    assert shrunk.shape == (3, 16, 16) and shrunk.min() >= 0 and shrunk.max() <= 1


@pytest.mark.slow
@needs_data
@backend_independent
def test_a_short_run_evaluates_on_test_mosaics_only_and_keeps_a_finished_run(tmp_path):
    workdir = tmp_path / "segment"
    args = (f"--workdir={workdir}", "--steps=4", "--log_every=2", "--batch_size=4", "--eval_images=6",
            "--out_channels=8")
    out = run_app(SCRIPT, *args, timeout=300).stdout
    assert "Evaluated on 6 test mosaics (24 Fashion-MNIST test images, 6144 pixels)" in out
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert (metrics["eval_images"], metrics["eval_test_items"], metrics["eval_pixels"]) == (6, 24, 6 * 32 * 32)
    assert len(metrics["per_class_iou"]) == 11 and 0 <= metrics["mean_iou"] <= 1
    assert metrics["mean_iou"] == pytest.approx(np.mean(metrics["per_class_iou"]))
    assert 0 <= metrics["pixel_accuracy"] <= 1 and metrics["image_size"] == 32
    segmenter = keras.saving.load_model(workdir / "segmenter.keras")
    logits = keras.ops.convert_to_numpy(segmenter(np.zeros((2, 32, 32, 1), "float32")))
    assert logits.shape == (2, 32, 32, 11) and np.isfinite(logits).all()
    before = (workdir / "metrics.json").read_text()
    again = run_app(SCRIPT, *args, check=False, timeout=300)
    assert again.returncode != 0 and "already holds metrics.json" in again.stderr
    assert (workdir / "metrics.json").read_text() == before
