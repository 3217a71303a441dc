"""LayerNormalization over the last axis in each backend's fastest form."""

import keras
from keras import ops

from keras_mae.layers import fast_form


@keras.saving.register_keras_serializable(package="keras_mae")
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization(axis=-1)` with scale and center, same weights and values.

    On torch it is Keras's own (`F.layer_norm`'s fused kernel). Elsewhere it is
    `layer_norm`: `(x - mean) / sqrt(var + epsilon) * gamma + beta` in float32,
    which XLA:CPU fuses into fewer full-size passes than Keras's `x * inv + res`
    form, with a written-out gradient that keeps only what `F.layer_norm` keeps.

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
        if fast_form.uses_torch_kernels():
            return super().call(inputs)
        gamma, beta = ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32")
        return layer_norm(inputs, gamma, beta, self.epsilon, self.compute_dtype)


def layer_norm(x, gamma, beta, epsilon, dtype):
    """`(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis in float32, cast to `dtype`.

    The gradient is written out (`keras.ops.custom_gradient`) so that the backward
    pass keeps only `x` in its own dtype and the per-row mean and 1 / std, as
    `F.layer_norm` does; it recomputes the normalised `x` from them. Autodiff of
    the same forward keeps float32 copies of the centred and the normalised `x`
    for every norm: in a ViT-B/16 MAE in bf16 that is 25 MiB per image of the
    117 MiB its backward pass keeps (BENCHMARKS.md, "What the backward pass
    keeps"). Gradients equal autodiff's to float32 rounding.

    Args:
        x: tensor (..., width), any float dtype.
        gamma, beta: float32 tensors (width,).
        epsilon: float added to the variance.
        dtype: the output's dtype (the layer's compute dtype).
    """

    def forward(x, gamma, beta):
        x32 = ops.cast(x, "float32")
        mean = ops.mean(x32, axis=-1, keepdims=True)
        centered = x32 - mean
        inverse_std = ops.rsqrt(ops.mean(ops.square(centered), axis=-1, keepdims=True) + epsilon)
        return ops.cast(centered * inverse_std * gamma + beta, dtype), mean, inverse_std

    if not fast_form.uses_written_gradients():
        return forward(x, gamma, beta)[0]

    @ops.custom_gradient
    def normalize(x, gamma, beta):
        outputs, mean, inverse_std = forward(x, gamma, beta)

        def gradient(*args, upstream=None):
            upstream = ops.cast(args[0] if upstream is None else upstream, "float32")
            normalized = (ops.cast(x, "float32") - mean) * inverse_std
            scaled = upstream * gamma
            dx = inverse_std * (scaled - ops.mean(scaled, axis=-1, keepdims=True)
                                - normalized * ops.mean(scaled * normalized, axis=-1, keepdims=True))
            rows = tuple(range(len(x.shape) - 1))
            return ops.cast(dx, x.dtype), ops.sum(upstream * normalized, axis=rows), ops.sum(upstream, axis=rows)

        return outputs, gradient

    return normalize(x, gamma, beta)


@keras.saving.register_keras_serializable(package="keras_mae")
class LayerNormalization(LayerNorm):
    """`LayerNorm` as the final norm of a `keras.Model` (`ViTEncoder.norm`, `ViTClassifier.fc_norm`).

    Only the class name differs, and it is Keras's on purpose: a `.keras` file stores the layers a
    model reaches through `model.layers` under their class names (`layers/layer_normalization`), so
    files saved when these norms were `keras.layers.LayerNormalization` keep loading, both ways.
    """
