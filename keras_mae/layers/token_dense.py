"""A Dense layer over token sequences that runs as one 2-D matmul."""

import keras
from keras import ops

from keras_mae.layers import torch_linear
from keras_mae.layers.fast_form import uses_torch_kernels


@keras.saving.register_keras_serializable(package="keras_mae")
class TokenDense(keras.layers.Dense):
    """`keras.layers.Dense` on (..., dim) inputs, computed on the inputs flattened to (rows, dim).

    Same weights, initialisers and outputs as `Dense`; only the matmul is 2-D.
    On XLA:CPU (jax, and tensorflow with XLA) the kernel gradient of a 3-D
    matmul transposes the incoming gradient, and that transpose absorbs the
    whole chain of residual-gradient additions behind it, recomputed once per
    layer (a fifth of the demo preset's jax pretraining step on CPU). The 2-D
    kernel gradient contracts over rows as they are laid out, with no transpose.
    On torch, matmul and bias run as one fused `F.linear` (`torch_linear`).

    >>> import numpy as np
    >>> tuple(TokenDense(4)(np.zeros((2, 3, 8), "float32")).shape)
    (2, 3, 4)
    """

    def call(self, inputs, training=None):
        if uses_torch_kernels():
            if keras.backend.backend() != "torch" or self.lora_enabled or self.quantization_mode is not None:
                return super().call(inputs, training=training)
            outputs = torch_linear.linear(inputs, self.kernel, self.bias)
            return outputs if self.activation is None else self.activation(outputs)
        shape = ops.shape(inputs)
        outputs = super().call(ops.reshape(inputs, (-1, shape[-1])), training=training)
        return ops.reshape(outputs, (*shape[:-1], self.units))
