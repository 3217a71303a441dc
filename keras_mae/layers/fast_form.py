"""Which form the fast layers take on this backend and device: one decision for all of them.

`attention`, `gelu`, `LayerNorm` and `TokenDense` compute the same values in
every form; only the kernels differ. The choice was measured (BENCHMARKS.md):
torch runs its own fused kernels fastest on any device; XLA:CPU (jax) runs
the forms written out in this package faster than the backends' own, and
tensorflow on a CPU (a graph without XLA there, Keras's choice) showed no
measurable difference between them and Keras's generic ones; on a GPU or TPU, XLA takes the fused attention
kernel and the written-out forms elsewhere. Outside torch, `LayerNorm` and
`gelu` also have written-out gradients that keep only their input for the
backward pass, as torch's kernels do, and so does the written-out attention
of XLA:CPU: it keeps q, k and v and recomputes the probabilities, as flash
attention does (`WRITTEN_GRADIENTS`).
"""

import keras

TORCH = "torch"
XLA_CPU = "xla_cpu"
XLA_ACCELERATOR = "xla_accelerator"
# The written-out gradients of `LayerNorm`, `gelu` and XLA:CPU's `attention` (the default); False: autodiff of the
# same forward pass, which `benchmarks/train_step.py`'s `+autodiff` variants and the tests compare against.
WRITTEN_GRADIENTS = True
# The fused attention kernel on accelerators (the default); False: the written-out attention there too, with its
# recomputing gradient, which `benchmarks/train_step.py`'s `jax+written` variant compares on a GPU. Torch keeps
# `F.scaled_dot_product_attention` either way.
FUSED_ATTENTION = True


def fast_form():
    """The form for the current backend and first device: `TORCH`, `XLA_CPU` or `XLA_ACCELERATOR`.

    >>> fast_form() in (TORCH, XLA_CPU, XLA_ACCELERATOR)
    True
    """
    if keras.backend.backend() == "torch":
        return TORCH
    return XLA_CPU if on_cpu() else XLA_ACCELERATOR


def on_cpu():
    """True where Keras computes on the CPU (no GPU or TPU in use), on any backend.

    >>> isinstance(on_cpu(), bool)
    True
    """
    if keras.backend.backend() == "torch":  # keras.distribution is None there; Keras picks the device itself
        from keras.src.backend.torch.core import get_device

        return get_device() == "cpu"
    return keras.distribution.list_devices()[0].lower().startswith("cpu")


def uses_torch_kernels():
    """True where the layers call torch's fused kernels (`F.gelu`, `F.layer_norm`, a 3-D `F.linear`)."""
    return fast_form() == TORCH


def uses_fused_attention():
    """True where `attention` is a fused kernel: torch's, and on accelerators XLA's (unless `FUSED_ATTENTION` is off)."""
    form = fast_form()
    return form == TORCH or (form == XLA_ACCELERATOR and FUSED_ATTENTION)


def uses_written_gradients():
    """True where `LayerNorm`, `gelu` and the written-out `attention` differentiate by their written-out gradients
    (not on torch)."""
    return WRITTEN_GRADIENTS and not uses_torch_kernels()
