"""Weighted k-nearest-neighbour monitor of the encoder's features during pretraining."""

import keras
import numpy as np
from keras import ops


def knn_predict(
    train_features,
    train_labels,
    test_features,
    num_classes,
    k=20,
    temperature=0.07,
    chunk_size=1024,
):
    """Weighted kNN classification on cosine similarity (InstDisc / DINO).

    [Wu et al., 2018](https://arxiv.org/abs/1805.01978); the evaluation of
    DINO's `eval_knn.py`: features are L2-normalised, each test feature takes
    its `k` most cosine-similar train features, neighbour `j` votes for its
    class with weight `exp(sim_j / temperature)`, and the class with the
    largest summed weight wins.

    Args:
        train_features: array (num_train, dim).
        train_labels: int array (num_train,), in `[0, num_classes)`.
        test_features: array (num_test, dim).
        num_classes: int. Number of classes.
        k: int. Number of neighbours (capped at num_train). Defaults to 20.
        temperature: float. Softmax-like temperature of the votes.
            Defaults to 0.07.
        chunk_size: int. Test features processed at once, bounding the
            similarity matrix to (chunk_size, num_train). Defaults to 1024.

    Returns:
        int32 numpy array (num_test,) of predicted classes.

    >>> train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> knn_predict(train, np.array([0, 0, 1]), np.array([[0.1, 1.0]]), 2, k=2)
    array([1], dtype=int32)
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1. Received: k={k}")
    train = ops.normalize(ops.convert_to_tensor(train_features, "float32"), axis=-1)
    labels = ops.one_hot(ops.convert_to_tensor(train_labels, "int32"), num_classes)
    k = min(k, int(train.shape[0]))
    test_features = np.asarray(test_features, dtype="float32")
    predictions = []
    for start in range(0, len(test_features), chunk_size):
        test = ops.normalize(
            ops.convert_to_tensor(test_features[start : start + chunk_size]), axis=-1
        )
        similarity = ops.matmul(test, ops.transpose(train))  # [B, num_train]
        top_similarity, top_indices = ops.top_k(similarity, k)  # [B, k]
        weights = ops.exp(top_similarity / temperature)
        votes = ops.take(labels, top_indices, axis=0)  # [B, k, num_classes]
        scores = ops.sum(votes * weights[..., None], axis=1)  # [B, num_classes]
        predictions.append(ops.convert_to_numpy(ops.argmax(scores, axis=-1)))
    if not predictions:
        return np.zeros((0,), dtype="int32")
    return np.concatenate(predictions).astype("int32")


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes,
    k=20,
    temperature=0.07,
    chunk_size=1024,
):
    """Top-1 accuracy (float in [0, 1]) of `knn_predict` against `test_labels`."""
    predictions = knn_predict(
        train_features,
        train_labels,
        test_features,
        num_classes,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    return float(np.mean(predictions == np.asarray(test_labels).reshape(-1)))


class KNNMonitor(keras.callbacks.Callback):
    """Logs the kNN top-1 accuracy of `model.encoder.features` every few epochs.

    Embeds `train_data` (the kNN memory bank) and `eval_data` with
    `model.encoder.features(images, pool=pool, training=False)`, L2-normalised
    (batch, hidden_dim) features, and writes `logs["knn_top1"]`. Put it
    before a `TensorBoard` / `CSVLogger` callback so that they see the value.
    Not serialisable (it holds data sets).

    Args:
        train_data: `(images, labels)` numpy arrays, or an iterable (e.g. a
            `tf.data.Dataset`) of `(images, labels)` batches. Labels are ints
            or one-hot.
        eval_data: same, the evaluated set.
        every_n_epochs: int. Evaluate after epochs `n, 2n, ...`. Defaults to 1.
        k: int. Neighbours. Defaults to 20.
        temperature: float. Vote temperature. Defaults to 0.07.
        pool: str or None. Passed to `encoder.features` (e.g. "mean" or
            "cls"). Defaults to "mean".
        batch_size: int. Batch size to embed numpy arrays. Defaults to 256.
        log_dir: str or None. If set, also writes the scalar `knn_top1` at
            step `epoch` with `tf.summary` to this directory. Defaults to None.
    """

    def __init__(
        self,
        train_data,
        eval_data,
        every_n_epochs=1,
        k=20,
        temperature=0.07,
        pool="mean",
        batch_size=256,
        log_dir=None,
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(
                f"`every_n_epochs` must be >= 1. Received: every_n_epochs={every_n_epochs}"
            )
        self.train_data = train_data
        self.eval_data = eval_data
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.pool = pool
        self.batch_size = batch_size
        self.log_dir = log_dir
        self._writer = None

    def _batches(self, data):
        if isinstance(data, (tuple, list)) and len(data) == 2:
            images, labels = data
            for start in range(0, len(images), self.batch_size):
                end = start + self.batch_size
                yield images[start:end], labels[start:end]
        elif hasattr(data, "as_numpy_iterator"):  # tf.data, on any backend
            yield from data.as_numpy_iterator()
        else:
            yield from data

    def _embed(self, data):
        features, labels = [], []
        for images, batch_labels in self._batches(data):
            batch_features = self.model.encoder.features(
                images, pool=self.pool, training=False
            )
            features.append(ops.convert_to_numpy(batch_features).astype("float32"))
            batch_labels = np.asarray(batch_labels)
            if batch_labels.ndim > 1:  # one-hot
                batch_labels = batch_labels.argmax(axis=-1)
            labels.append(batch_labels.astype("int32"))
        return np.concatenate(features), np.concatenate(labels)

    def evaluate(self):
        """Returns the kNN top-1 accuracy of the current encoder."""
        train_features, train_labels = self._embed(self.train_data)
        eval_features, eval_labels = self._embed(self.eval_data)
        num_classes = int(max(train_labels.max(), eval_labels.max())) + 1
        return knn_accuracy(
            train_features,
            train_labels,
            eval_features,
            eval_labels,
            num_classes,
            k=self.k,
            temperature=self.temperature,
        )

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        top1 = self.evaluate()
        if logs is not None:
            logs["knn_top1"] = top1
        if self.log_dir is not None:
            import tensorflow as tf  # Always installed; only for summaries.

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                tf.summary.scalar("knn_top1", top1, step=epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
