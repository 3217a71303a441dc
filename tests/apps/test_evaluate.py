"""apps/evaluate.py and the probe's reports end to end: an ImageNet-layout folder, an MLP head with the
random-init comparison, the report of held-out images, and a classifier in the official layout."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_mae import MaskedAutoencoder, ViTClassifier
from tests.run_app import backend_independent, run_app

# The apps' files, flags and reports: one backend. The predictions and metrics behind them run on every backend
# in tests/evaluation, and evaluate.py under DDP in tests/test_multiprocess.py.
pytestmark = backend_independent

ENCODER = dict(image_size=16, patch_size=4, num_channels=1, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)


def imagenet_folder(root, per_class=(12, 4)):
    """root/{train,val}/{shirt,tshirt}/*.png: grey images whose brightness tells the class."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_class):
        for label, name in enumerate(("shirt", "tshirt")):
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = np.clip(rng.normal(size=(16, 16)) * 25 + 70 + 110 * label, 0, 255).astype("uint8")
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A pretraining workdir on the folder (written directly), then an MLP probe of it with random-init comparison."""
    tmp = tmp_path_factory.mktemp("evaluate")
    folder = imagenet_folder(tmp / "data")
    workdir = tmp / "pretrain"
    os.makedirs(workdir)
    keras.utils.set_random_seed(1)
    model = MaskedAutoencoder(**ENCODER, decoder_hidden_dim=16, decoder_num_layers=1, decoder_num_heads=2,
                              decoder_mlp_dim=32)
    model.encoder.save(workdir / "encoder.keras")
    run = {"model_config": model.get_config(), "dataset": folder, "mean": [0.5], "std": [0.25]}
    (workdir / "run.json").write_text(json.dumps(run))
    probe_dir = tmp / "probe"
    result = run_app("linear_probe.py", f"--encoder={workdir}", f"--workdir={probe_dir}", "--head=mlp",
                     "--head_hidden_dims=16", "--cache_features", "--compare_random_init", "--epochs=20",
                     "--warmup_epochs=1", "--batch_size=8", "--mlp_base_lr=0.01", "--positive_class=shirt",
                     "--verbose=0")
    return tmp, folder, probe_dir, result.stdout


@pytest.mark.slow
def test_probe_reports_on_the_held_out_val_folder(probed):
    tmp, folder, probe_dir, stdout = probed
    assert "Data:             train 24 images, val 8 images (val/ of" in stdout
    assert "MLP probe top-1 on " in stdout and "val (8 images): pretrained" in stdout
    assert stdout.count("Report on val (8 images)") == 2  # the pretrained and the random-init probe
    report = json.loads((probe_dir / "report" / "report.json").read_text())
    assert (report["split"], report["num_images"], report["positive_class"]) == ("val", 8, "shirt")
    assert (probe_dir / "random_init" / "report" / "roc.png").exists()
    record = json.loads((probe_dir / "linear_probe.json").read_text())
    assert record["head"] == "mlp" and record["pretrained"]["top1"] == pytest.approx(report["accuracy"])
    loaded = keras.saving.load_model(probe_dir / "probe.keras")
    assert type(loaded).__name__ == "MLPProbe" and loaded.hidden_dims == (16,)


@pytest.mark.slow
def test_evaluate_a_probe_workdir_gives_the_probe_report(probed):
    tmp, folder, probe_dir, _ = probed
    out = tmp / "evaluation"
    result = run_app("evaluate.py", f"--model={probe_dir}", f"--workdir={out}", "--positive_class=shirt",
                     "--thresholds=0.25,0.5,0.75", "--target_recall=1.0")
    assert "Report on val (8 images)" in result.stdout
    report = json.loads((out / "report.json").read_text())
    probe_report = json.loads((probe_dir / "report" / "report.json").read_text())
    for key in ("accuracy", "log_loss", "roc_auc"):  # cached features and the full model agree
        assert report[key] == pytest.approx(probe_report[key], abs=1e-4), key
    assert [row["threshold"] for row in report["thresholds"]] == [0.25, 0.5, 0.75]
    assert report["target_recall"]["recall"] == 1.0
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(os.path.relpath(row["file"], folder) for row in rows) == sorted(
        f"val/{name}/{i}.png" for name in ("shirt", "tshirt") for i in range(4))
    assert all(row["true_label"] == row["file"].split(os.sep)[-2] for row in rows)
    text = (out / "report.md").read_text()
    assert "# Evaluation: val, 8 images" in text and "| 0.50 |" in text
    # Training images given as the evaluation set are refused, in one line.
    bad = run_app("evaluate.py", f"--model={probe_dir}", f"--workdir={tmp / 'bad'}",
                  f"--eval_dataset={os.path.join(folder, 'train')}", check=False)
    assert bad.returncode == 2 and "overlap the training images: 24 of the 24 files" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_evaluate_official_layout_weights_on_an_explicit_folder(probed, tmp_path):
    tmp, folder, _, _ = probed
    keras.utils.set_random_seed(0)
    classifier = ViTClassifier(**ENCODER, num_classes=2)
    from keras_mae import checkpoints

    checkpoints.save_official(classifier, str(tmp_path / "finetuned.safetensors"))
    # Nothing says what it trained on: the folder is evaluated whole, normalised with ImageNet's statistics.
    result = run_app("evaluate.py", f"--model={tmp_path / 'finetuned.safetensors'}", f"--workdir={tmp_path / 'out'}",
                     f"--eval_dataset={os.path.join(folder, 'val')}", "--num_heads=2")
    assert "Report on eval_dataset (8 images)" in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    images = np.stack([np.asarray(Image.open(os.path.join(folder, "val", name, f"{i}.png")), "float32")
                       for name in ("shirt", "tshirt") for i in range(4)])[..., None]
    expected = keras.ops.convert_to_numpy(classifier((images / 255 - 0.449) / 0.226)).argmax(axis=1)
    labels = np.repeat([0, 1], 4)
    assert report["accuracy"] == pytest.approx(np.mean(expected == labels))
