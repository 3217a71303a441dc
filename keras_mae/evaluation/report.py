"""An evaluation report on disk: report.json, report.md, predictions.csv, four figures, and TensorBoard."""

import csv
import os

import numpy as np

from keras_mae.evaluation.figures import report_figures
from keras_mae.evaluation.markdown import report_markdown
from keras_mae.evaluation.metrics import DEFAULT_THRESHOLDS, classification_report

# Scalars also written to TensorBoard, under `report/`.
SCALARS = ("accuracy", "top5", "roc_auc", "average_precision", "log_loss", "ece")


def evaluation_report(labels, probabilities, split, num_images=None, class_names=None, positive_class=None,
                      thresholds=DEFAULT_THRESHOLDS, target_recall=0.9, **context):
    """`classification_report` with what it was computed on first: `split`, `num_images` and `context`.

    Args:
        labels, probabilities, class_names, positive_class, thresholds, target_recall: see
            `classification_report`.
        split: str. The evaluation split's name ("test", "val", "held-out val", ...).
        num_images: int or None. Defaults to the number of labels.
        **context: JSON-ready entries saying what was evaluated (`model`, `dataset`, `split_how`, ...).

    Returns:
        dict, `split` and `num_images` first.
    """
    numbers = classification_report(labels, probabilities, class_names, positive_class, thresholds, target_recall)
    counted = numbers.pop("num_images")
    count = counted if num_images is None else int(num_images)
    return {"split": split, "num_images": count, **context, **numbers}


def write_predictions(path, report, labels, probabilities, files=None):
    """predictions.csv: file (or index), true label, predicted label, one probability column per class."""
    from keras_mae.utils.atomic import atomic_path

    names = report["class_names"]
    predicted = np.asarray(probabilities).argmax(axis=1)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file" if files is not None else "index", "true_label", "predicted_label",
                             *[f"p_{name}" for name in names]])
            for i, (label, guess, row) in enumerate(zip(labels, predicted, probabilities)):
                writer.writerow([files[i] if files is not None else i, names[label], names[guess],
                                 *[f"{p:.6f}" for p in row]])


def write_report(directory, report, labels, probabilities, files=None, tensorboard_dir=None, step=0):
    """Writes `report` (from `evaluation_report`) and its figures, predictions and TensorBoard summaries.

    Args:
        directory: str. Receives report.json, report.md, predictions.csv and confusion_matrix.png,
            roc.png, pr.png, calibration.png.
        report: dict from `evaluation_report`.
        labels: int array (n,). True classes.
        probabilities: float array (n, num_classes).
        files: sequence of str or None. Each image's file, for predictions.csv; None writes indices.
        tensorboard_dir: str or None. Where the figures and scalars go (`tensorboard --logdir`).
        step: int. TensorBoard step.

    Returns:
        The path of report.md.
    """
    from keras_mae.utils.atomic import atomic_path, write_json_atomic

    os.makedirs(directory, exist_ok=True)
    labels = np.asarray(labels).reshape(-1)
    title = f"{report['split']} ({report['num_images']:,} images)"
    figures = report_figures(labels, probabilities, report, title)
    for name, png in figures.items():
        with atomic_path(os.path.join(directory, name)) as tmp:
            with open(tmp, "wb") as f:
                f.write(png)
    write_predictions(os.path.join(directory, "predictions.csv"), report, labels, probabilities, files)
    write_json_atomic(os.path.join(directory, "report.json"), report)
    markdown = os.path.join(directory, "report.md")
    with atomic_path(markdown) as tmp:
        with open(tmp, "w") as f:
            f.write(report_markdown(report, figures=list(figures)))
    if tensorboard_dir:
        _tensorboard(tensorboard_dir, report, figures, step)
    return markdown


def _tensorboard(log_dir, report, figures, step):
    import tensorflow as tf  # always installed; only for summaries

    writer = tf.summary.create_file_writer(log_dir)
    split = report["split"].replace(" ", "_")
    with writer.as_default():
        for name in SCALARS:
            if report.get(name) is not None:
                tf.summary.scalar(f"report/{split}/{name}", report[name], step=step)
        tf.summary.scalar(f"report/{split}/macro_f1", report["macro"]["f1"], step=step)
        for name, png in figures.items():
            image = tf.io.decode_png(png, channels=3)[None]
            tf.summary.image(f"report/{split}/{name[:-len('.png')]}", image, step=step)
    writer.close()
