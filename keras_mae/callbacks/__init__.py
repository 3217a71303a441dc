"""Training callbacks."""

from keras_mae.callbacks.knn import KNNMonitor
from keras_mae.callbacks.knn import knn_accuracy
from keras_mae.callbacks.knn import knn_predict
