"""Evaluation reports of classifiers: scikit-learn metrics, thresholds, calibration, figures and predictions."""

from keras_mae.evaluation.metrics import (
    DEFAULT_THRESHOLDS,
    calibration_bins,
    classification_report,
    expected_calibration_error,
    threshold_for_recall,
)
from keras_mae.evaluation.predict import predict_probabilities
from keras_mae.evaluation.report import evaluation_report, write_predictions, write_report
