"""The figures of an evaluation report, drawn with matplotlib (and scikit-learn's displays) to PNG bytes."""

import io

import numpy as np

from keras_mae.evaluation.metrics import calibration_bins

MAX_CURVES = 10  # classes drawn one by one in the ROC / PR figures; more get one pooled curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    return plt


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def confusion_matrix_png(report, title):
    """Counts, rows true and columns predicted; values written in the cells up to 20 classes."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    matrix = np.asarray(report["confusion_matrix"])
    names = report["class_names"]
    size = min(12, 3 + 0.45 * len(names))
    figure, axes = plt.subplots(figsize=(size, size))
    display = ConfusionMatrixDisplay(matrix, display_labels=names if len(names) <= 30 else None)
    display.plot(ax=axes, include_values=len(names) <= 20, cmap="Blues", colorbar=False, xticks_rotation=45)
    axes.set_title(f"Confusion matrix, {title}")
    return _png(figure)


def _curves(labels, probabilities, report, kind):
    """ROC or precision-recall curves: the positive class (binary), each class, or all pooled."""
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    display = RocCurveDisplay if kind == "roc" else PrecisionRecallDisplay
    names = report["class_names"]
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 5))
    if len(names) == 2:
        positive = names.index(report["positive_class"])
        display.from_predictions(labels == positive, probabilities[:, positive], ax=axes, name=names[positive])
    elif len(names) <= MAX_CURVES:
        for k, name in enumerate(names):
            if (labels == k).any() and not (labels == k).all():
                display.from_predictions(labels == k, probabilities[:, k], ax=axes, name=name)
    else:  # pooled over every (image, class) pair: the micro-average
        one_hot = np.eye(len(names), dtype=bool)[labels]
        display.from_predictions(one_hot.ravel(), probabilities.ravel(), ax=axes, name="all classes (micro)")
    return figure, axes


# kind -> (title, x label, y label, report metric, its name, legend corner)
_CURVES = {
    "roc": ("ROC", "false positive rate (1 - specificity)", "true positive rate (recall)", "roc_auc", "ROC-AUC",
            "lower right"),
    "pr": ("Precision-recall", "recall", "precision", "average_precision", "average precision", "lower left"),
}


def curve_png(labels, probabilities, report, title, kind):
    """The ROC (`kind="roc"`, with the chance diagonal) or precision-recall figure (with the target-recall point)."""
    name, x_label, y_label, metric, metric_name, corner = _CURVES[kind]
    figure, axes = _curves(labels, probabilities, report, kind)
    target = report.get("target_recall")
    if kind == "roc":
        axes.plot([0, 1], [0, 1], "k:", linewidth=1, label="chance")
    elif target:
        axes.plot([target["recall"]], [target["precision"]], "ro",
                  label=f"threshold {target['threshold']:.3f}: recall {target['recall']:.3f}")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    value = report[metric]
    axes.set_title(f"{name}, {title}" + (f"\n{metric_name} {value:.3f}" if value is not None else ""))
    axes.legend(loc=corner, fontsize="small")
    return _png(figure)


def calibration_png(labels, probabilities, report, title):
    """Reliability diagram: accuracy against confidence per bin, and how many images each bin holds."""
    plt = _pyplot()
    bins = calibration_bins(labels, probabilities)
    edges, width = bins["edges"], np.diff(bins["edges"])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    full = bins["count"] > 0
    top.bar(edges[:-1][full], bins["accuracy"][full], width=width[full], align="edge", edgecolor="k",
            label="accuracy")
    top.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    top.plot(bins["confidence"][full], bins["accuracy"][full], "r.", label="mean confidence")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(f"Reliability, {title}\nECE {report['ece']:.3f} ({len(width)} bins)")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(edges[:-1], bins["count"], width=width, align="edge", edgecolor="k", color="grey")
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    return _png(figure)


def report_figures(labels, probabilities, report, title):
    """`{file name: PNG bytes}` of the four figures."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    return {
        "confusion_matrix.png": confusion_matrix_png(report, title),
        "roc.png": curve_png(labels, probabilities, report, title, "roc"),
        "pr.png": curve_png(labels, probabilities, report, title, "pr"),
        "calibration.png": calibration_png(labels, probabilities, report, title),
    }
