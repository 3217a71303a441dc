"""The numbers of an evaluation report, from true labels and predicted class probabilities.

The arithmetic is scikit-learn's (`sklearn.metrics`), the field's reference; this module picks the
metrics, handles classes absent from the evaluation images, and adds what scikit-learn lacks: the
expected calibration error and, for binary tasks, a threshold table and the threshold reaching a
target recall.
"""

import numpy as np

DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95
ECE_BINS = 15


def _check(labels, probabilities):
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(f"probabilities must be (num_images, num_classes) for {len(labels)} labels. "
                         f"Received: shape={probabilities.shape}")
    if len(labels) == 0:
        raise ValueError("There are no images to evaluate.")
    if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise ValueError(f"labels must be in [0, {probabilities.shape[1]}). Received: [{labels.min()}, {labels.max()}]")
    return labels, probabilities


def calibration_bins(labels, probabilities, num_bins=ECE_BINS):
    """Top-label reliability: per equal-width confidence bin, its count, mean confidence and accuracy.

    A prediction's confidence is its largest class probability; bin b holds
    confidences in (b / num_bins, (b + 1) / num_bins] (the first also 0).

    Returns:
        dict of numpy arrays (num_bins,): `count`, `confidence`, `accuracy` (NaN where empty), and `edges`
        (num_bins + 1,).
    """
    labels, probabilities = _check(labels, probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(index, confidence, minlength=num_bins) / count
        accuracy = np.bincount(index, correct.astype(np.float64), minlength=num_bins) / count
    return {"count": count, "confidence": mean_confidence, "accuracy": accuracy, "edges": edges}


def expected_calibration_error(labels, probabilities, num_bins=ECE_BINS):
    """ECE (Guo et al. 2017): sum over bins of |accuracy - confidence| weighted by the bin's share of images.

    >>> expected_calibration_error([0, 1], [[0.9, 0.1], [0.6, 0.4]])  # bins: 0.9 right, 0.6 wrong
    0.35
    """
    bins = calibration_bins(labels, probabilities, num_bins)
    full = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][full] - bins["confidence"][full]) * bins["count"][full]
    return round(float(gaps.sum() / bins["count"].sum()), 12)


def _stats(values):
    return {"min": float(np.min(values)), "max": float(np.max(values)), "mean": float(np.mean(values))}


def _at_threshold(positive, scores, threshold):
    """Accuracy, precision, recall and specificity of `scores >= threshold` (None where undefined)."""
    predicted = scores >= threshold
    tp, fp = int(np.sum(predicted & positive)), int(np.sum(predicted & ~positive))
    fn, tn = int(np.sum(~predicted & positive)), int(np.sum(~predicted & ~positive))
    ratio = lambda a, b: a / (a + b) if a + b else None  # noqa: E731
    return {"threshold": float(threshold), "accuracy": (tp + tn) / len(scores), "precision": ratio(tp, fp),
            "recall": ratio(tp, fn), "specificity": ratio(tn, fp), "predicted_positive": tp + fp}


def threshold_for_recall(positive, scores, target_recall):
    """The highest threshold whose `scores >= threshold` finds at least `target_recall` of the positives.

    Args:
        positive: bool array (n,). True for the positive class.
        scores: float array (n,). Predicted probability of the positive class.
        target_recall: float in (0, 1].

    Returns:
        The `_at_threshold` row of that threshold, with `target` added; None without positives.
    """
    from sklearn.metrics import precision_recall_curve

    positive = np.asarray(positive, bool)
    if not positive.any():
        return None
    _, recall, thresholds = precision_recall_curve(positive, scores)
    # recall[i] is the recall of scores >= thresholds[i] (thresholds ascending, recall falling).
    reaching = thresholds[recall[:-1] >= target_recall]
    return {"target": float(target_recall), **_at_threshold(positive, scores, reaching.max())}


def classification_report(labels, probabilities, class_names=None, positive_class=None,
                          thresholds=DEFAULT_THRESHOLDS, target_recall=0.9, num_bins=ECE_BINS):
    """Every number of an evaluation report (see `apps/evaluate.py`), computed with scikit-learn.

    Args:
        labels: int array (n,). True classes, in [0, num_classes).
        probabilities: float array (n, num_classes). Predicted class probabilities (rows sum to 1).
        class_names: sequence of str or None. Defaults to "0", "1", ...
        positive_class: int or None. Binary tasks: the class whose recall matters (the sick
            patients, the faulty parts). Defaults to class 1.
        thresholds: sequence of floats. Binary tasks: the rows of the threshold table.
        target_recall: float in (0, 1]. Binary tasks: the recall the chosen threshold must reach.
        num_bins: int. Bins of the expected calibration error. Defaults to 15.

    Returns:
        dict: `num_images`, `accuracy`, `top5` (more than 5 classes), `per_class` (precision,
        recall, f1, support per class name), `macro` and `weighted` averages, `roc_auc` and
        `average_precision` (binary: of the positive class; else one-vs-rest macro over the
        classes present), `log_loss`, `ece`, `probabilities` (min / max / mean of the predicted
        class's probability, and per class), `confusion_matrix` (rows true, columns predicted),
        `class_names`; binary tasks add `positive_class`, `thresholds` and `target_recall`.
    """
    from sklearn import metrics

    labels, probabilities = _check(labels, probabilities)
    num_classes = probabilities.shape[1]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes.")
    predicted = probabilities.argmax(axis=1)
    classes = list(range(num_classes))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0)
    report = {
        "num_images": int(len(labels)),
        "class_names": names,
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
    }
    if num_classes > 5:
        report["top5"] = float(metrics.top_k_accuracy_score(labels, probabilities, k=5, labels=classes))
    report["per_class"] = {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                           for name, p, r, f, s in zip(names, precision, recall, f1, support)}
    for average in ("macro", "weighted"):
        p, r, f, _ = metrics.precision_recall_fscore_support(labels, predicted, labels=classes, average=average,
                                                             zero_division=0)
        report[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    present = [k for k in classes if (labels == k).any() and not (labels == k).all()]
    if num_classes == 2:
        positive_class = 1 if positive_class is None else int(positive_class)
        scores, positive = probabilities[:, positive_class], labels == positive_class
        both = positive.any() and not positive.all()
        report["roc_auc"] = float(metrics.roc_auc_score(positive, scores)) if both else None
        report["average_precision"] = float(metrics.average_precision_score(positive, scores)) if both else None
    else:
        one_vs_rest = lambda score: [score(labels == k, probabilities[:, k]) for k in present]  # noqa: E731
        report["roc_auc"] = float(np.mean(one_vs_rest(metrics.roc_auc_score))) if present else None
        report["average_precision"] = float(np.mean(one_vs_rest(metrics.average_precision_score))) if present else None
    report["log_loss"] = float(metrics.log_loss(labels, probabilities, labels=classes))
    report["ece"] = expected_calibration_error(labels, probabilities, num_bins)
    report["probabilities"] = {"predicted_class": _stats(probabilities.max(axis=1)),
                               "per_class_mean": dict(zip(names, map(float, probabilities.mean(axis=0))))}
    report["confusion_matrix"] = metrics.confusion_matrix(labels, predicted, labels=classes).tolist()
    if num_classes == 2:
        report["positive_class"] = names[positive_class]
        report["probabilities"]["positive_class"] = _stats(scores)
        report["thresholds"] = [_at_threshold(positive, scores, t) for t in thresholds]
        report["target_recall"] = threshold_for_recall(positive, scores, target_recall)
    return report
