"""Exact (erf) GELU in the form each backend runs fastest."""

import math

from keras import ops

from keras_mae.layers.fast_form import uses_torch_kernels


def gelu(x):
    """GELU with the exact normal CDF, `x * (1 + erf(x / sqrt(2))) / 2`, as `torch.nn.GELU()`.

    On torch, `keras.ops.gelu(approximate=False)` is `F.gelu`'s fused kernel;
    elsewhere it is `jax.nn.gelu`'s / `tf.nn.gelu`'s erfc form, which XLA:CPU
    runs markedly slower than the erf form written out here (same values to
    float32 rounding).

    >>> import numpy as np
    >>> [round(float(v), 4) for v in gelu(np.array([-1.0, 0.0, 1.0], "float32"))]
    [-0.1587, 0.0, 0.8413]
    """
    if uses_torch_kernels():
        return ops.gelu(x, approximate=False)
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))
