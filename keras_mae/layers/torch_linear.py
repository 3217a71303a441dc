"""The torch backend's Dense: one fused `F.linear` (matmul and bias in one `addmm`) instead of matmul then add.

Measured on the CPU (BENCHMARKS.md, "Fused bias on torch"): Keras's `Dense`
runs `torch.matmul` and then a separate, memory-bound bias add; `F.linear`
folds the bias into the GEMM (`addmm`), forward and backward. Same values to
float32 rounding; `tests/layers/test_layers.py` checks outputs and gradients
against `keras.layers.Dense`.
"""


def linear(inputs, kernel, bias):
    """`inputs @ kernel + bias` as `torch.nn.functional.linear`; `kernel` in Keras's (in, out) layout, `bias` or None."""
    import torch
    from keras import ops

    bias = None if bias is None else ops.convert_to_tensor(bias)
    return torch.nn.functional.linear(inputs, ops.convert_to_tensor(kernel).T, bias)
