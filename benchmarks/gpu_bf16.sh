#!/usr/bin/env bash
# ViT-B/16 at 224 in bf16 on one GPU: keras_mae on the jax and torch backends against the Hugging Face
# reference under torch.autocast, each step on one device-resident batch. Needs a python3 with torch and
# jax (CUDA builds), transformers and keras; TensorFlow is not needed.
#   benchmarks/gpu_bf16.sh [OUTDIR]        (PRESET=... STEPS=... to try it on something smaller)
set -u
out=${1:-.}
preset=${PRESET:-mae_vit_base_patch16}
steps=${STEPS:-10}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
cd "$(dirname "$0")/.."
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi") | tee "$out/gpu.txt"
python3 - <<'PY' 2>&1 | tee -a "$out/gpu.txt"
import os
os.environ["KERAS_BACKEND"] = "jax"
import jax, jax.numpy as jnp, keras, torch, transformers
from keras.src.backend.jax.nn import _can_use_flash_attention
q = jnp.zeros((8, 50, 12, 64), "bfloat16")
print("torch", torch.__version__, "jax", jax.__version__, "keras", keras.__version__, "transformers",
      transformers.__version__, jax.devices(), "| jax cuDNN flash attention usable:", _can_use_flash_attention(q, q, q, None))
PY
run() {
    timeout "$1" python3 benchmarks/train_step.py --preset="$preset" --steps="$steps" --windows=5 --warmup=5 \
        --dtype_policy=mixed_bfloat16 --backends=jax,torch --reference "${@:2}"
}
run 300 --batch_size=256 2>&1 | tee "$out/bf16_batch256.txt"
run 200 --batch_size=64 2>&1 | tee "$out/bf16_batch64.txt"
