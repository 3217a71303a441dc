"""MLP probe: a frozen ViT encoder + BatchNorm + a small MLP head, for users who want more than a linear probe."""

import keras

from keras_mae.models.linear_probe import LinearProbe


@keras.saving.register_keras_serializable(package="keras_mae")
class MLPProbe(LinearProbe):
    """Frozen encoder features -> BatchNorm (no affine) -> [Dense -> GELU -> Dropout] x n -> Dense.

    The features, the frozen encoder, the whitening BatchNorm and the last
    Dense (trunc_normal std 0.01, zero bias) are `LinearProbe`'s; between them
    sit `len(hidden_dims)` hidden layers (xavier-uniform, zero bias, exact
    GELU, dropout). `apps/linear_probe.py --head=mlp` trains it with AdamW.

    Args:
        encoder: `ViTEncoder` (or its serialised config). Frozen by the probe.
        num_classes: int. Outputs of the head.
        pool: str. "cls" or "mean". Defaults to "cls".
        hidden_dims: sequence of int. Width of each hidden layer. Defaults to (1024,).
        dropout: float in [0, 1). Dropout after each hidden layer. Defaults to 0.1.

    >>> import numpy as np
    >>> from keras_mae.models.vit_encoder import ViTEncoder
    >>> encoder = ViTEncoder(8, 4, 1, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    >>> probe = MLPProbe(encoder, num_classes=3, hidden_dims=(8,))
    >>> tuple(probe(np.zeros((2, 8, 8, 1), "float32")).shape)
    (2, 3)
    >>> [w.path for w in probe.trainable_weights]
    ['hidden_0/kernel', 'hidden_0/bias', 'head/kernel', 'head/bias']
    """

    def __init__(self, encoder, num_classes, pool="cls", hidden_dims=(1024,), dropout=0.1, **kwargs):
        hidden_dims = tuple(int(d) for d in hidden_dims)
        if not hidden_dims or min(hidden_dims) < 1:
            raise ValueError(f"hidden_dims must be positive ints (at least one). Received: hidden_dims={hidden_dims}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
        self.hidden_dims, self.dropout = hidden_dims, float(dropout)
        super().__init__(encoder, num_classes, pool, **kwargs)

    def build_hidden(self, width):
        self.hidden_layers, self.dropouts = [], []
        for i, dim in enumerate(self.hidden_dims):
            dense = keras.layers.Dense(dim, activation="gelu", kernel_initializer="glorot_uniform",
                                       dtype=self.dtype_policy, name=f"hidden_{i}")  # keras's gelu is the exact erf form
            dense.build((None, width))
            self.hidden_layers.append(dense)
            self.dropouts.append(keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=f"dropout_{i}"))
            width = dim
        return width

    def hidden(self, x, training=False):
        for dense, dropout in zip(self.hidden_layers, self.dropouts):
            x = dropout(dense(x), training=training)
        return x

    def get_config(self):
        return {**super().get_config(), "hidden_dims": list(self.hidden_dims), "dropout": self.dropout}
