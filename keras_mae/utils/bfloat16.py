"""Whether this machine runs bfloat16 matmuls faster than float32 ones, for choosing inference precision."""

import keras

from keras_mae.layers.fast_form import on_cpu

# x86 flags of native bf16 dot products (AVX512_BF16: Cooper Lake, Zen 4 and newer; AMX: Sapphire Rapids and newer).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16_matmul(cpuinfo="/proc/cpuinfo"):
    """True where the CPU reports native bf16 dot-product instructions (Linux `/proc/cpuinfo` flags).

    >>> isinstance(cpu_has_bf16_matmul(), bool)
    True
    """
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def fast_inference_policy():
    """"mixed_bfloat16" where inference in bf16 runs faster, else "float32".

    That is the torch backend on a CPU with bf16 dot products (oneDNN: 2-3x on the demo encoder, BENCHMARKS.md),
    and GPUs, whose fast path bf16 is (measured there for training). XLA:CPU (jax, tensorflow) gains nothing from
    bf16 on the CPU, and older CPUs emulate it.
    """
    if not on_cpu():
        return "mixed_bfloat16"
    return "mixed_bfloat16" if keras.backend.backend() == "torch" and cpu_has_bf16_matmul() else "float32"

