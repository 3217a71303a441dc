"""keep_freed_memory: torch's out-of-place temporaries stop page-faulting back in once glibc keeps them."""

import os
import platform
import subprocess
import sys

import pytest

from tests.run_app import backend_independent

# Out-of-place ops on 9 MiB tensors, as Keras's optimizer runs them on the torch backend; prints faults per cycle.
SCRIPT = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from keras_mae.utils.malloc_tuning import keep_freed_memory
    assert keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
xs = [torch.randn(768, 3072) for _ in range(4)]
[torch.sqrt(x.abs()) + 1e-8 for x in xs]
start = faults()
for _ in range(30):
    ys = [torch.sqrt(x.abs()) + 1e-8 for x in xs]
    del ys
print((faults() - start) / 30)
"""


@backend_independent
@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc's mallopt")
def test_freed_tensors_are_reused_instead_of_refaulted():
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, "KERAS_BACKEND": "torch"})
        return float(out.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert kept < default / 3, (default, kept)
