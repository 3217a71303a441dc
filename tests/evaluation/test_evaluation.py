"""Evaluation reports: the numbers equal scikit-learn's, the target-recall threshold reaches its target,
calibration is the textbook ECE, and the files (JSON, markdown, CSV, figures, TensorBoard) are written."""

import csv
import json

import numpy as np
import pytest
from sklearn import metrics

from keras_mae import evaluation


def predictions(num_images, num_classes, seed=0, skill=2.0):
    """Labels and softmax probabilities of a classifier that is right more often than chance."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_images)
    logits = rng.normal(size=(num_images, num_classes)) + skill * np.eye(num_classes)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


def test_multiclass_numbers_equal_scikit_learn():
    labels, probabilities = predictions(300, 7)
    names = [f"class_{i}" for i in range(7)]
    report = evaluation.classification_report(labels, probabilities, names)
    predicted = probabilities.argmax(axis=1)
    assert report["num_images"] == 300
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert report["top5"] == pytest.approx(metrics.top_k_accuracy_score(labels, probabilities, k=5))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(labels, predicted)
    for i, name in enumerate(names):
        row = report["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i]))
    for average in ("macro", "weighted"):
        expected = metrics.precision_recall_fscore_support(labels, predicted, average=average)[:3]
        assert tuple(report[average][k] for k in ("precision", "recall", "f1")) == pytest.approx(expected)
    assert report["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, probabilities, multi_class="ovr"))
    one_hot = np.eye(7)[labels]
    assert report["average_precision"] == pytest.approx(metrics.average_precision_score(one_hot, probabilities))
    assert report["log_loss"] == pytest.approx(metrics.log_loss(labels, probabilities))
    assert report["confusion_matrix"] == metrics.confusion_matrix(labels, predicted).tolist()
    stats = report["probabilities"]["predicted_class"]
    assert (stats["min"], stats["max"]) == pytest.approx((probabilities.max(1).min(), probabilities.max(1).max()))
    assert "thresholds" not in report and "top5" not in evaluation.classification_report(*predictions(50, 3))


def test_binary_numbers_threshold_table_and_target_recall():
    labels, probabilities = predictions(400, 2, seed=1, skill=1.5)
    report = evaluation.classification_report(labels, probabilities, ["healthy", "sick"], target_recall=0.95)
    scores = probabilities[:, 1]
    assert report["positive_class"] == "sick"
    assert report["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert report["average_precision"] == pytest.approx(metrics.average_precision_score(labels, scores))
    assert [row["threshold"] for row in report["thresholds"]] == pytest.approx(np.arange(1, 20) * 0.05)
    for row in report["thresholds"]:
        called = scores >= row["threshold"]
        assert row["recall"] == pytest.approx(metrics.recall_score(labels, called))
        assert row["specificity"] == pytest.approx(metrics.recall_score(labels, called, pos_label=0))
        assert row["accuracy"] == pytest.approx(metrics.accuracy_score(labels, called))
        if called.any():
            assert row["precision"] == pytest.approx(metrics.precision_score(labels, called))
    target = report["target_recall"]
    called = scores >= target["threshold"]
    assert metrics.recall_score(labels, called) >= 0.95  # really reaches it ...
    assert target["recall"] == pytest.approx(metrics.recall_score(labels, called))
    assert target["precision"] == pytest.approx(metrics.precision_score(labels, called))
    higher = scores[scores > target["threshold"]].min()  # ... and is the highest threshold that does
    assert metrics.recall_score(labels, scores >= higher) < 0.95
    # The other class as the positive one: the same task seen from the other side.
    flipped = evaluation.classification_report(labels, probabilities, ["healthy", "sick"], positive_class=0)
    assert flipped["roc_auc"] == pytest.approx(report["roc_auc"])
    assert flipped["probabilities"]["positive_class"]["mean"] == pytest.approx(probabilities[:, 0].mean())


def test_expected_calibration_error_is_the_textbook_one():
    labels, probabilities = predictions(500, 4, seed=2)
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    expected = 0.0
    for low, high in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            expected += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    assert evaluation.expected_calibration_error(labels, probabilities) == pytest.approx(expected)
    perfect = np.eye(3)[[0, 1, 2, 1]]
    assert evaluation.expected_calibration_error([0, 1, 2, 1], perfect) == 0.0


def test_classes_absent_from_the_evaluation_images():
    labels, probabilities = predictions(120, 4, seed=3)
    labels[labels == 3] = 0  # class 3 has no evaluation image
    report = evaluation.classification_report(labels, probabilities)
    present = [0, 1, 2]
    expected = np.mean([metrics.roc_auc_score(labels == k, probabilities[:, k]) for k in present])
    assert report["roc_auc"] == pytest.approx(expected)
    assert report["per_class"]["3"]["support"] == 0
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        evaluation.classification_report([0, 4], probabilities[:2])


def test_write_report_files_and_tensorboard(tmp_path):
    labels, probabilities = predictions(60, 2, seed=4)
    report = evaluation.evaluation_report(labels, probabilities, "held-out val", class_names=["shirt", "t-shirt"],
                                          model="probe.keras", split_how="10% held out")
    assert list(report)[:2] == ["split", "num_images"] and report["num_images"] == 60
    files = [f"/data/{i}.png" for i in range(60)]
    path = evaluation.write_report(str(tmp_path), report, labels, probabilities, files, str(tmp_path / "tb"))
    for name in ("report.json", "report.md", "predictions.csv", "confusion_matrix.png", "roc.png", "pr.png",
                 "calibration.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "report.json").read_text())
    required = {"split", "num_images", "accuracy", "per_class", "macro", "weighted", "roc_auc", "average_precision",
                "log_loss", "ece", "probabilities", "thresholds", "target_recall"}
    assert required <= set(saved)
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and rows[5]["file"] == "/data/5.png"
    assert rows[5]["true_label"] == ["shirt", "t-shirt"][labels[5]]
    assert float(rows[5]["p_t-shirt"]) == pytest.approx(probabilities[5, 1], abs=1e-6)
    text = open(path).read()
    assert text.startswith("# Evaluation: held-out val, 60 images") and "## Thresholds" in text
    assert "Target recall 90.0%" in text and "![calibration](calibration.png)" in text

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"report/held-out_val/roc", "report/held-out_val/accuracy", "report/held-out_val/ece"} <= tags


def test_predict_probabilities_ties_each_prediction_to_its_image(tmp_path):
    """On every backend: the ids ride through `predict` with the images, so labels, files and probabilities stay
    aligned, and the probabilities are the model's softmax on the evaluation pipeline's images."""
    import keras

    from keras_mae.data import load_source, make_eval_dataset

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_test=rng.integers(0, 256, (13, 8, 8), dtype=np.uint8),
             y_test=np.arange(13) % 3)
    source = load_source(str(tmp_path / "data.npz"), split="test")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    labels, probabilities, _ = evaluation.predict_probabilities(model, source, (8, 8), batch_size=5)
    np.testing.assert_array_equal(labels, np.arange(13) % 3)
    images = np.concatenate([x for x, _ in make_eval_dataset(source, (8, 8), 5).as_numpy_iterator()])
    logits = keras.ops.convert_to_numpy(model(images))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
