#!/usr/bin/env bash
# One lent GPU, one go (issue 16's GPU rows and issue 12's DDP row), each part under its own time limit:
#   1. where the jax backend's ViT-B/16 bf16 step spends its GPU time (benchmarks/gpu_profile.py);
#   2. jax, torch and the HF reference at batch 256 (benchmarks/train_step.py, as gpu_bf16.sh);
#   3. torch DDP on the GPU, world size 1, NCCL (benchmarks/ddp_train_step.py under torchrun);
#   4. ViT-L/16 at batch 256, jax and the reference;  5. ViT-B/16 at batch 1024, jax and the reference.
# Needs python3 with CUDA torch and jax, transformers and keras (no TensorFlow).
#   benchmarks/gpu_round2.sh OUTDIR
set -u
out=${1:-.}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
cd "$(dirname "$0")/.."
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi") | tee "$out/gpu.txt"
python3 -c "import jax, torch, keras, transformers; print('jax', jax.__version__, 'torch', torch.__version__, \
'keras', keras.__version__, 'transformers', transformers.__version__)" 2>&1 | tail -1 | tee -a "$out/gpu.txt"
bench() {  # limit, output name, train_step.py arguments
    timeout "$1" python3 benchmarks/train_step.py --steps=10 --windows=3 --warmup=3 --dtype_policy=mixed_bfloat16 \
        "${@:3}" 2>&1 | tee "$out/$2.txt"
}
KERAS_BACKEND=jax timeout 110 python3 benchmarks/gpu_profile.py --preset=mae_vit_base_patch16 --batch_size=256 \
    --dtype_policy=mixed_bfloat16 --out=/tmp/mae_profile > "$out/profile.txt" 2>&1
cp /tmp/mae_profile/profile_summary.json "$out/" 2>/dev/null; tail -c 3000 "$out/profile.txt"
bench 150 vit_b_batch256 --preset=mae_vit_base_patch16 --batch_size=256 --backends=jax,torch --reference
KERAS_BACKEND=torch timeout 80 torchrun --standalone --nproc_per_node=1 benchmarks/ddp_train_step.py \
    --preset=mae_vit_base_patch16 --batch_size=256 --dtype_policy=mixed_bfloat16 --warmup=3 --windows=3 \
    2>&1 | grep -v "^W\|Warning" | tee "$out/ddp_world1.txt"
bench 100 vit_l_batch256 --preset=mae_vit_large_patch16 --batch_size=256 --backends=jax --reference
bench 90 vit_b_batch1024 --preset=mae_vit_base_patch16 --batch_size=1024 --backends=jax --reference
echo done
