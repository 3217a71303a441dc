"""Predictions over a whole dataset, each tied to its image (file) by an id that rides through the model."""

import keras
import numpy as np


class _WithIds(keras.Model):
    """(inputs, ids) -> {"outputs": model's outputs, "ids": ids}, so `predict` keeps them aligned."""

    def __init__(self, model, method=None, **kwargs):
        super().__init__(**kwargs)
        self.inner = model
        self.method = method
        self.built = True

    def call(self, inputs):
        images, ids = inputs
        outputs = getattr(self.inner, self.method)(images) if self.method else self.inner(images, training=False)
        return {"outputs": outputs, "ids": ids}


def predict_with_ids(model, dataset, method=None, verbose=0):
    """Runs `model` (compiled, on any backend) over `(inputs, ids)` batches: `(outputs, ids)` as numpy.

    The ids go through the same compiled step as the inputs, so they stay aligned even when the
    pipeline drops an unreadable file.

    Args:
        model: Keras layer or model.
        dataset: `tf.data.Dataset` of `(inputs, ids)` batches.
        method: str or None. A method of `model` to call instead of `model(inputs, training=False)`.
        verbose: Keras progress output. Defaults to 0.

    Returns:
        `(outputs numpy (n, ...), ids numpy (n,))`.
    """
    name = f"{model.name}_with_ids"
    results = _WithIds(model, method, name=name).predict(dataset.map(lambda x, ids: ((x, ids),)), verbose=verbose)
    return np.asarray(results["outputs"]), np.asarray(results["ids"]).reshape(-1)


def with_ids(source):
    """`(source relabelled with example ids, resolve)`; `resolve(ids)` gives `(true labels, files or None)`.

    A stream without a key table (TFDS) keeps its labels, which then come back as they are.
    """
    if source.key_table is None:
        return source, lambda ids: (np.asarray(ids, np.int64), None)

    def resolve(ids):
        ids = np.asarray(ids, np.int64)
        return source.labels[ids].astype(np.int64), None if source.files is None else [source.files[i] for i in ids]

    return source.relabel(np.arange(source.num_examples)), resolve


def predict_probabilities(model, source, image_size, batch_size=256, mean=None, std=None, verbose=0):
    """Class probabilities of every image of `source`, with its true label and file.

    Args:
        model: Keras model mapping normalised images to logits (ViTClassifier, LinearProbe, ...).
        source: `Source`, labelled.
        image_size: (height, width). Images are resized and centre-cropped to it (evaluation transform).
        batch_size: int. Defaults to 256.
        mean, std: normalisation; None uses the source's.
        verbose: Keras progress output. Defaults to 0.

    Under torch DDP every process predicts its share of `source` and returns all of them.

    Returns:
        `(labels int (n,), probabilities float64 (n, num_classes), files list or None)`.
    """
    from keras_mae.data import make_eval_dataset
    from keras_mae.distribution import data_shard, torch_ddp

    indexed, resolve = with_ids(source)
    # Under torch DDP each process predicts its share and every process gets them all, in one process's order.
    shard = data_shard() if torch_ddp.active() else None
    dataset = make_eval_dataset(indexed, image_size, batch_size, mean=mean, std=std, shard=shard)
    logits, ids = predict_with_ids(model, dataset, verbose=verbose)
    if shard is not None:
        logits, ids = torch_ddp.gather_arrays(logits, ids)
        if source.key_table is not None:  # ids are positions
            order = np.argsort(ids, kind="stable")
            logits, ids = logits[order], ids[order]
    labels, files = resolve(ids)
    return labels, softmax(logits), files


def softmax(logits):
    """Row-wise softmax in float64 (rows sum to 1 to ~1e-15, as scikit-learn checks)."""
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
