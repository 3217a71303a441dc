"""Tests for keras_mae.callbacks.knn: weighted kNN math and the KNNMonitor callback."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_mae.callbacks import KNNMonitor, knn_accuracy, knn_predict


def _knn_reference(train, train_labels, test, num_classes, k, temperature):
    """Brute-force numpy weighted kNN (DINO eval_knn.py)."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    predictions = []
    for query in test:
        similarity = train @ query
        neighbours = np.argsort(-similarity)[:k]
        scores = np.zeros(num_classes)
        for j in neighbours:
            scores[train_labels[j]] += np.exp(similarity[j] / temperature)
        predictions.append(np.argmax(scores))
    return np.array(predictions)


def _unit(angles):
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype("float32")


def test_knn_uses_the_20_nearest_by_angle():
    # 20 class-0 points within 0.19 rad of the query, 30 class-1 points farther
    # away on both sides: all 20 neighbours are class 0 (a 21st would not be).
    class0 = _unit(np.linspace(-0.19, 0.19, 20))
    class1 = _unit(np.concatenate([np.linspace(0.3, 1.0, 15), np.linspace(-1.0, -0.3, 15)]))
    train = np.concatenate([class0, class1]) * 3.0  # norms do not matter
    labels = np.array([0] * 20 + [1] * 30)
    assert knn_predict(train, labels, _unit(np.array([0.0])), 2).tolist() == [0]
    # With k = 21, one class-1 point joins but still loses the vote.
    assert knn_predict(train, labels, _unit(np.array([0.0])), 2, k=21).tolist() == [0]


def test_weighting_beats_majority_vote():
    # One neighbour of class 0 at similarity 1, two of class 1 at cos(1.0).
    train = _unit(np.array([0.0, 1.0, -1.0]))
    labels = np.array([0, 1, 1])
    query = _unit(np.array([0.0]))
    assert knn_predict(train, labels, query, 2, k=3, temperature=0.07).tolist() == [0]
    # A high temperature flattens the weights into a majority vote.
    assert knn_predict(train, labels, query, 2, k=3, temperature=100.0).tolist() == [1]


def test_knn_matches_reference_and_chunking_is_exact():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(64, 8)).astype("float32")
    labels = rng.integers(0, 5, size=64)
    test = rng.normal(size=(23, 8)).astype("float32")
    want = _knn_reference(train, labels, test, 5, k=7, temperature=0.1)
    for chunk_size in [1, 5, 1024]:
        got = knn_predict(train, labels, test, 5, k=7, temperature=0.1, chunk_size=chunk_size)
        np.testing.assert_array_equal(got, want)
    # k larger than the memory bank is capped.
    np.testing.assert_array_equal(
        knn_predict(train, labels, test, 5, k=500, temperature=0.1),
        _knn_reference(train, labels, test, 5, k=64, temperature=0.1),
    )
    accuracy = knn_accuracy(train, labels, test, want, 5, k=7, temperature=0.1)
    assert accuracy == 1.0


class ColourEncoder(keras.layers.Layer):
    """Stands in for ViTEncoder: features are the mean colour of the image."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pools = []

    def features(self, images, pool=None, training=False):
        self.pools.append(pool)
        return ops.mean(ops.convert_to_tensor(images), axis=(1, 2))


class FakeMAE(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoder = ColourEncoder()
        self.dense = keras.layers.Dense(1)

    def build(self, input_shape):
        self.dense.build(input_shape[:1] + input_shape[-1:])

    def call(self, images):
        return self.dense(ops.mean(images, axis=(1, 2)))


def _colour_images(num, rng):
    labels = rng.integers(0, 3, size=num)
    colours = np.eye(3, dtype="float32")[labels] + 0.1
    images = colours[:, None, None, :] + rng.normal(scale=0.05, size=(num, 4, 4, 3))
    return images.astype("float32"), labels


def test_knn_monitor_logs_every_n_epochs(tmp_path):
    rng = np.random.default_rng(0)
    train, evaluation = _colour_images(30, rng), _colour_images(12, rng)
    monitor = KNNMonitor(
        train, evaluation, every_n_epochs=2, k=5, pool="cls", batch_size=8, log_dir=str(tmp_path)
    )
    model = FakeMAE()
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(
        train[0], np.zeros((30, 1), "float32"), epochs=2, batch_size=15, callbacks=[monitor], verbose=0
    )
    assert history.history["knn_top1"] == [1.0]  # only after epoch 2
    assert set(model.encoder.pools) == {"cls"}
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))


def test_knn_monitor_accepts_batched_datasets_and_one_hot_labels():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    (images, labels), evaluation = _colour_images(20, rng), _colour_images(9, rng)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.eye(3)[labels])).batch(6)
    monitor = KNNMonitor(dataset, evaluation, k=3)
    monitor.set_model(FakeMAE())
    assert monitor.evaluate() == 1.0
    with pytest.raises(ValueError, match="every_n_epochs"):
        KNNMonitor(dataset, evaluation, every_n_epochs=0)
