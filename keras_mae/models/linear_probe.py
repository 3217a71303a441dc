"""Linear probe: a frozen ViT encoder + BatchNorm + linear head, as facebookresearch/mae `main_linprobe.py`."""

import keras
from keras import ops

from keras_mae.models.vit_encoder import POOLS, ViTEncoder


@keras.saving.register_keras_serializable(package="keras_mae")
class LinearProbe(keras.Model):
    """Frozen encoder features -> BatchNorm (no affine) -> Dense: the MAE linear-probing model.

    As the official `main_linprobe.py`: the head is
    `Sequential(BatchNorm1d(D, affine=False, eps=1e-6), Linear(D, num_classes))`
    with the Linear trunc_normal(std=0.01) and zero bias (MoCo v3), and every
    encoder weight is frozen. The BatchNorm whitens the features, which matters
    for MAE's (unlike contrastive) features whose scales differ a lot per
    channel (paper, appendix A.2).

    Features (`features`), as the official `models_vit.VisionTransformer`:
    - "cls": the CLS token after the encoder's final LayerNorm (the default).
    - "mean": the mean of the patch tokens before the final LayerNorm,
      normalised by a LayerNorm without affine, which is what the official
      `global_pool` model's freshly initialised, frozen `fc_norm` computes
      (its pretrained `norm` is dropped).

    The encoder always runs in inference mode and is not trainable, so after
    `fit` only `head_norm`'s moving statistics and `head`'s kernel and bias
    have changed.

    Args:
        encoder: `ViTEncoder` (or its serialised config). Frozen by the probe.
        num_classes: int. Outputs of the head.
        pool: str. "cls" or "mean". Defaults to "cls".

    Call arguments:
        images: float tensor (batch, height, width, num_channels), normalised.
        training: bool. BatchNorm uses batch statistics (and updates its
            moving ones) when True.

    Returns:
        Logits (batch, num_classes).

    >>> import numpy as np
    >>> encoder = ViTEncoder(8, 4, 1, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    >>> probe = LinearProbe(encoder, num_classes=3)
    >>> tuple(probe(np.zeros((2, 8, 8, 1), "float32")).shape)
    (2, 3)
    >>> [w.path for w in probe.trainable_weights]
    ['head/kernel', 'head/bias']
    """

    def __init__(self, encoder, num_classes, pool="cls", **kwargs):
        super().__init__(**kwargs)
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if not isinstance(encoder, ViTEncoder):
            raise ValueError(f"encoder must be a ViTEncoder. Received: {type(encoder).__name__}")
        if isinstance(num_classes, bool) or int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive int. Received: num_classes={num_classes!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}. Received: pool={pool!r}")
        self.num_classes = int(num_classes)
        self.pool = pool

        # === Layers ===
        self.encoder = encoder
        self.encoder.trainable = False
        for variable in self.encoder.weights:  # also when deserialised already "frozen" (then the setter is a no-op on TF)
            variable.trainable = False
        width = (None, encoder.hidden_dim)
        # torch BatchNorm1d(momentum=0.1) updates `stat = 0.9 * stat + 0.1 * batch`: keras momentum 0.9.
        self.head_norm = keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-6, center=False, scale=False, dtype=self.dtype_policy, name="head_norm"
        )
        self.head_norm.build(width)
        head_width = self.build_hidden(encoder.hidden_dim)
        self.head = keras.layers.Dense(
            self.num_classes, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
            bias_initializer="zeros", dtype=self.dtype_policy, name="head",
        )
        self.head.build((None, head_width))
        self.built = True

    def build_hidden(self, width):
        """Creates the head's layers between the BatchNorm and the last Dense (none here); returns their output width."""
        return width

    def features(self, images):
        """Frozen features (batch, hidden_dim) of normalised images: `encoder.features(images, pool)`, in inference."""
        return self.encoder.features(images, pool=self.pool, training=False)

    def classify(self, features, training=False):
        """Logits (batch, num_classes) of `features` (batch, hidden_dim): the head alone."""
        return self.head(self.hidden(self.head_norm(features, training=training), training=training))

    def hidden(self, x, training=False):
        """The head's layers between the BatchNorm and the last Dense: none in the linear probe."""
        return x

    def call(self, images, training=False):
        return self.classify(ops.stop_gradient(self.features(images)), training=training)

    def head_model(self):
        """A `keras.Model` from features to logits sharing this probe's head layers (for cached features)."""
        inputs = keras.Input((self.encoder.hidden_dim,), name="features")
        # training=None: the model's own call decides (BatchNorm and dropout train in fit, not in predict).
        return keras.Model(inputs, self.classify(inputs, training=None), name=f"{self.name}_head")

    def extract_features(self, dataset, verbose="auto", dtype_policy=None):
        """Features and labels of a dataset, computed once (compiled, on any backend), as numpy.

        Labels ride through the compiled function beside the images, so the
        data is read once and stays aligned with its features.

        Args:
            dataset: `tf.data.Dataset` of `(images, labels)` batches.
            verbose: Keras progress output of `predict`. Defaults to "auto".
            dtype_policy: str or None. Precision of the encoder's forward pass, e.g. "mixed_bfloat16" (2-3x
                faster on torch with a CPU's bf16 matmuls, see BENCHMARKS.md); None: the encoder's own.

        Returns:
            `(features float32 (n, hidden_dim), labels int32 (n,))`.
        """
        from keras_mae.evaluation.predict import predict_with_ids

        source = self
        if dtype_policy is not None and keras.dtype_policies.get(dtype_policy).name != self.encoder.dtype_policy.name:
            source = _Features(self.encoder.with_dtype_policy(dtype_policy), self.pool)
        features, labels = predict_with_ids(source, dataset, method="features", verbose=verbose)
        return features.astype("float32"), labels.astype("int32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_classes": self.num_classes,
                "pool": self.pool,
            }
        )
        return config


class _Features(keras.Model):
    """`features(images)`: an encoder's pooled inference features, as `LinearProbe.features`, without a head."""

    def __init__(self, encoder, pool, **kwargs):
        super().__init__(**{"name": "pooled_features", **kwargs})  # the class's own name is no valid TF scope
        self.encoder = encoder
        self.pool = pool
        self.built = True

    def features(self, images):
        return self.encoder.features(images, pool=self.pool, training=False)
