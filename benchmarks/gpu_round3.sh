#!/usr/bin/env bash
# One lent GPU, one go (issue 16, item 2): the torch backend's captured train step (jit_compile=True,
# keras_mae/models/torch_captured_step.py: make_fx graph, TorchInductor with CUDA graphs) on the GPU.
#   1. it trains as the eager step on CUDA: tests/models/test_torch_captured_step.py (the uncompiled graph's
#      bitwise check may differ by CUDA's non-deterministic atomics; the compiled one is checked to tolerance);
#   2. ViT-B/16 at 224, bf16, batch 256: torch+jit, torch eager and the HF reference (benchmarks/train_step.py);
#   3. the same at batch 64, where the eager torch backend was 0.56-0.72x (host-bound);
#   4. (item 1, jax) whether cuDNN's flash attention takes the decoder's 197 tokens padded, and what it saves
#      per block (benchmarks/gpu_attention.py; jax only).
# Each part under its own time limit, about 10 minutes in all. Needs python3 with CUDA torch, transformers,
# pytest and keras (carried as wheels: keras, namex, optree; see /work/.library/device/README.md). No TensorFlow.
#   benchmarks/gpu_round3.sh OUTDIR
set -u
out=${1:-.}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 KERAS_BACKEND=torch
cd "$(dirname "$0")/.."
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi") | tee "$out/gpu.txt"
python3 -c "import torch, keras, transformers; print('torch', torch.__version__, 'keras', keras.__version__, \
'transformers', transformers.__version__)" 2>&1 | tail -1 | tee -a "$out/gpu.txt"
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/models/test_torch_captured_step.py 2>&1 \
    | tail -40 | tee "$out/captured_step_tests.txt"
bench() {  # limit, output name, train_step.py arguments
    timeout "$1" python3 benchmarks/train_step.py --preset=mae_vit_base_patch16 --steps=10 --windows=3 --warmup=3 \
        --dtype_policy=mixed_bfloat16 "${@:3}" 2>&1 | tee "$out/$2.txt"
}
bench 240 vit_b_batch256 --batch_size=256 --backends=torch+jit,torch --reference
bench 150 vit_b_batch64 --batch_size=64 --backends=torch+jit --reference
timeout 90 python3 benchmarks/gpu_attention.py --batch_size=256 2>&1 | grep -v "^[WIE]0" | tee "$out/attention.txt"
echo done
