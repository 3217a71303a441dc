"""Reading the CPU's bf16 instructions, and the inference precision chosen from them."""

import keras

from keras_mae.utils import bfloat16
from tests.run_app import backend_independent


@backend_independent
def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    def cpu(flags):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        return bfloat16.cpu_has_bf16_matmul(str(path))

    assert cpu("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni")
    assert cpu("fpu avx2 amx_bf16 amx_tile")
    assert not cpu("fpu sse2 avx2 avx512f avx512_vnni")
    assert not bfloat16.cpu_has_bf16_matmul(str(tmp_path / "missing"))


def test_fast_inference_policy_follows_the_backend_and_the_cpu(monkeypatch):
    on_cpu = bfloat16.on_cpu()
    for has_bf16 in (True, False):
        monkeypatch.setattr(bfloat16, "cpu_has_bf16_matmul", lambda: has_bf16)
        expected = "mixed_bfloat16" if not on_cpu or (keras.backend.backend() == "torch" and has_bf16) else "float32"
        assert bfloat16.fast_inference_policy() == expected
