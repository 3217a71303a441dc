"""LayerNormalization over the last axis in each backend's fastest form."""

import keras
from keras import ops

from keras_mae.layers.fast_form import uses_torch_kernels


@keras.saving.register_keras_serializable(package="keras_mae")
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization(axis=-1)` with scale and center, same weights and values.

    On torch it is Keras's own (`F.layer_norm`'s fused kernel). Elsewhere it is
    `(x - mean) / sqrt(var + epsilon) * gamma + beta` in float32, which XLA:CPU
    fuses into fewer full-size passes than Keras's `x * inv + res` form, whose
    per-element scale and shift tensors are materialised for the gradient.

    >>> import numpy as np
    >>> tuple(LayerNorm()(np.array([[1.0, 3.0]], "float32")).shape)
    (1, 2)
    """

    def __init__(self, axis=-1, center=True, scale=True, rms_scaling=False, **kwargs):
        if axis not in (-1, [-1], (-1,)) or not center or not scale or rms_scaling:
            raise ValueError(
                "LayerNorm normalises the last axis with scale and center only. Received: "
                f"axis={axis}, center={center}, scale={scale}, rms_scaling={rms_scaling}; "
                "use keras.layers.LayerNormalization for other settings."
            )
        super().__init__(axis=axis, center=center, scale=scale, rms_scaling=rms_scaling, **kwargs)

    def call(self, inputs):
        if uses_torch_kernels():
            return super().call(inputs)
        x = ops.cast(inputs, "float32")
        centered = x - ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        outputs = centered * ops.rsqrt(variance + self.epsilon) * ops.cast(self.gamma, "float32")
        return ops.cast(outputs + ops.cast(self.beta, "float32"), self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_mae")
class LayerNormalization(LayerNorm):
    """`LayerNorm` as the final norm of a `keras.Model` (`ViTEncoder.norm`, `ViTClassifier.fc_norm`).

    Only the class name differs, and it is Keras's on purpose: a `.keras` file stores the layers a
    model reaches through `model.layers` under their class names (`layers/layer_normalization`), so
    files saved when these norms were `keras.layers.LayerNormalization` keep loading, both ways.
    """
