"""Training callbacks."""

from keras_mae.callbacks.checkpoint import (EpochCheckpoint, checkpoint_records, complete_checkpoints,
                                            latest_checkpoint, restore_latest)
from keras_mae.callbacks.knn import KNNMonitor, knn_accuracy, knn_predict
from keras_mae.callbacks.preemption import Preempted, StopOnSignal
from keras_mae.callbacks.reconstruction import ReconstructionSummary
from keras_mae.callbacks.training_log import StopOnNonFiniteLoss, TrainingLog
