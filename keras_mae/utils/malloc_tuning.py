"""glibc malloc settings that stop a CPU training step from returning, then re-faulting, its freed tensors.

Keras's optimizers and ops on the torch backend allocate a fresh tensor per op (out of place), many of
them a few MiB to tens of MiB. glibc serves blocks above its mmap threshold (128 KiB, raised dynamically
up to 32 MiB) with `mmap` and unmaps them on free, so every step page-faults its temporaries back in:
ViT-B/16 bf16 on the torch backend spent about a third of its CPU step there (BENCHMARKS.md). Keeping
blocks up to 32 MiB in the heap, and the heap untrimmed, removes that. Unlike `GLIBC_TUNABLES`, `mallopt`
works after the process has started.
"""

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The highest glibc's own dynamic threshold goes on 64-bit. glibc 2.36's mallopt also takes more (1 GiB), which was
# no faster on the torch backend nor the tf.data pipeline (BENCHMARKS.md, "glibc's huge pages for the jax backend").
MMAP_THRESHOLD_MAX = 32 * 2**20
TRIM_THRESHOLD = 2**31  # effectively never give the top of the heap back


def keep_freed_memory(mmap_threshold=MMAP_THRESHOLD_MAX, trim_threshold=TRIM_THRESHOLD):
    """Serves blocks up to `mmap_threshold` bytes from the heap and keeps freed memory there (glibc only).

    Process-wide; the apps call it at start on the torch backend. Peak memory is unchanged (freed blocks are reused),
    but the process no longer shrinks back between steps.

    Returns:
        bool: True where glibc took both settings; False elsewhere (musl, macOS, Windows), changing nothing.

    >>> isinstance(keep_freed_memory(), bool)
    True
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols, libc's among them; no library search
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
