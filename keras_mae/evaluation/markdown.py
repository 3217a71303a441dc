"""report.md: an evaluation report that a person reads top to bottom."""

MAX_CLASS_ROWS = 50  # per-class rows shown; report.json has them all


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _headline(report):
    rows = [("accuracy", _pct(report["accuracy"]))]
    if "top5" in report:
        rows.append(("top-5 accuracy", _pct(report["top5"])))
    rows += [
        ("macro precision / recall / F1", " / ".join(_pct(report["macro"][k]) for k in ("precision", "recall", "f1"))),
        ("weighted precision / recall / F1",
         " / ".join(_pct(report["weighted"][k]) for k in ("precision", "recall", "f1"))),
        ("ROC-AUC" + (f" ({report['positive_class']})" if "positive_class" in report else " (one-vs-rest, macro)"),
         _num(report["roc_auc"])),
        ("average precision" + (f" ({report['positive_class']})" if "positive_class" in report else " (macro)"),
         _num(report["average_precision"])),
        ("log loss", _num(report["log_loss"], 4)),
        ("expected calibration error (15 bins)", _num(report["ece"], 4)),
    ]
    return _table(("metric", "value"), rows)


def _per_class(report):
    items = list(report["per_class"].items())
    rows = [(name, _pct(m["precision"]), _pct(m["recall"]), _pct(m["f1"]), m["support"])
            for name, m in items[:MAX_CLASS_ROWS]]
    table = _table(("class", "precision", "recall", "F1", "images"), rows)
    if len(items) > MAX_CLASS_ROWS:
        table += f"\n\n{len(items) - MAX_CLASS_ROWS} more classes in report.json."
    return table


def _thresholds(report):
    positive = report["positive_class"]
    rows = [(f"{row['threshold']:.2f}", _pct(row["accuracy"]), _pct(row["precision"]), _pct(row["recall"]),
             _pct(row["specificity"]), row["predicted_positive"]) for row in report["thresholds"]]
    text = [f"An image is called **{positive}** when its predicted probability of {positive} is at least the "
            "threshold. Precision is n/a where nothing is called positive.", "",
            _table(("threshold", "accuracy", "precision", "recall", "specificity", f"called {positive}"), rows)]
    target = report.get("target_recall")
    if target:
        text += ["", f"**Target recall {_pct(target['target'])}**: the highest threshold that still finds at least "
                 f"{_pct(target['target'])} of the {positive} images is **{target['threshold']:.4f}**: recall "
                 f"{_pct(target['recall'])}, precision {_pct(target['precision'])}, specificity "
                 f"{_pct(target['specificity'])}. It was chosen on these very images, so expect a little less on new "
                 "ones: confirm it on other held-out images before relying on it."]
    return "\n".join(text)


def report_markdown(report, figures=()):
    """The text of report.md for a report from `evaluation_report`."""
    stats = report["probabilities"]["predicted_class"]
    lines = [f"# Evaluation: {report['split']}, {report['num_images']:,} images", ""]
    for key, label in (("model", "Model"), ("dataset", "Data"), ("split_how", "Evaluation images")):
        if report.get(key):
            lines.append(f"- {label}: {report[key]}")
    lines += [f"- Classes: {len(report['class_names'])}", "", "## Summary", "", _headline(report), "",
              "## Per class", "", _per_class(report), ""]
    if "thresholds" in report:
        lines += ["## Thresholds", "", _thresholds(report), ""]
    lines += ["## Calibration", "",
              f"Expected calibration error {_num(report['ece'], 4)}: the gap between confidence and accuracy, "
              "averaged over 15 equal-width confidence bins (0 is perfectly calibrated). The predicted class's "
              f"probability ranges from {stats['min']:.3f} to {stats['max']:.3f} (mean {stats['mean']:.3f}).", ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{name[:-4]}]({name})" for name in figures] + [""]
    lines += ["Per-image predictions: predictions.csv. Every number: report.json.", ""]
    return "\n".join(lines)
