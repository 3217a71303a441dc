"""What the apps that evaluate a classifier share: its report on the evaluation split, and the record evaluate.py reads."""

import os

import common

CLASSIFIER_RECORD = "classifier.json"


def class_names(split, num_classes):
    """The data's class names when they fit the classifier, else "0", "1", ..."""
    names = split.eval.class_names or (split.train.class_names if split.train is not None else None)
    if names and len(names) == num_classes:
        return [str(name) for name in names]
    return [str(i) for i in range(num_classes)]


def write_classifier_record(workdir, model_file, split, mean, std, names):
    """`workdir/classifier.json`: the model file and what evaluating it needs (data, split, normalisation, classes).
    Process 0 only."""
    from keras_mae.utils.atomic import write_json_atomic

    if not common.chief():
        return
    write_json_atomic(os.path.join(workdir, CLASSIFIER_RECORD), {
        "model": model_file, "dataset": split.record["dataset"], "eval_dataset": split.record["eval_dataset"],
        "mean": [float(m) for m in mean], "std": [float(s) for s in std], "class_names": list(names),
    })


def read_classifier_record(directory):
    """The classifier.json in `directory`, or {}."""
    import json

    path = os.path.join(directory, CLASSIFIER_RECORD)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def write(FLAGS, directory, labels, probabilities, files, split, names, tensorboard_dir=None, **context):
    """Writes the evaluation report of `probabilities` on the evaluation split to `directory`; prints its headline.

    Args:
        FLAGS: flags with the report options (positive_class, thresholds, target_recall).
        directory: str. Receives report.json, report.md, predictions.csv and the figures.
        labels, probabilities, files: per image: true class, class probabilities, file (or None).
        split: `keras_mae.data.Split`. Names the images evaluated.
        names: list of str. Class names.
        tensorboard_dir: str or None.
        **context: what was evaluated (model, dataset), saved in the report.

    Returns:
        The report dict (every process computes it; process 0 writes it).
    """
    from keras_mae import evaluation

    options = common.report_options(FLAGS, names)
    report = evaluation.evaluation_report(labels, probabilities, split.eval_name, class_names=names,
                                          split_how=split.how, **context, **options)
    if not common.chief():
        return report
    path = evaluation.write_report(directory, report, labels, probabilities, files, tensorboard_dir)
    auc = report["roc_auc"]
    print(f"Report on {split.eval_name} ({report['num_images']} images): accuracy {100 * report['accuracy']:.1f}%, "
          f"macro F1 {100 * report['macro']['f1']:.1f}%, ROC-AUC {'n/a' if auc is None else f'{auc:.3f}'}, "
          f"ECE {report['ece']:.3f}")
    target = report.get("target_recall")
    if target:
        print(f"  {report['positive_class']}: threshold {target['threshold']:.4f} reaches recall "
              f"{100 * target['recall']:.1f}% (target {100 * target['target']:.0f}%) at precision "
              f"{100 * target['precision']:.1f}%")
    print(f"Report:           {path}")
    return report
