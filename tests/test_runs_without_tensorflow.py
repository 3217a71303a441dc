"""The lent GPU machines have jax and torch but no TensorFlow (benchmarks/gpu_round3.sh): what runs there must
not import it. A GPU run is rare and short, so an import that slipped in would waste it; this catches it here."""

import sys

import pytest

from tests.run_app import ROOT, backend_independent, run

# Imported first by every Python process of the run: TensorFlow, as on the GPU machine, is not installed.
NO_TENSORFLOW = """import sys
for name in ("tensorflow", "tensorflow_datasets", "tf_keras"):
    sys.modules[name] = None
"""


@backend_independent  # it starts one process per backend itself
@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_backend_without_tensorflow(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(NO_TENSORFLOW)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    blocked = run([sys.executable, "-c", "import tensorflow"], check=False, env=env)
    assert "ModuleNotFoundError" in blocked.stderr  # the block works
    # As gpu_round3.sh's parts 2, 3 and 5 run it (one batch kept on the device, no tf.data), at a tiny size and in
    # float32: bf16 imports nothing more, and its matmul-peak measurement takes 20 s on a CPU without bf16 units.
    result = run([sys.executable, "benchmarks/train_step.py", "--preset=mae_vit_tiny_patch4_28", "--batch_size=2",
                  "--steps=1", "--windows=1", "--warmup=1", "--backends=jax,torch", "--reference",
                  "--feed=resident"], env=env, timeout=600)
    # The summary table: a row per implementation and backend, with its images/s.
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in result.stdout.splitlines()
            if line.startswith(("| keras_mae", "| HF ViTMAE"))]
    assert sorted(row[1] for row in rows) == ["jax", "torch", "torch"], result.stdout[-3000:]
    assert all(float(row[3]) > 0 for row in rows)
