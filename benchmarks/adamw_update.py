"""One AdamW update on a preset's trainable variables: Keras's torch AdamW, our fused update, torch's three forms.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/adamw_update.py --preset=mae_vit_base_patch16

Times `optimizer.apply` alone (random gradients, made once) on the torch backend: Keras's `keras.optimizers.AdamW`
as it ships (`torch._foreach_*` ops), the same with `keras_mae.optimizers.torch_fused_adamw` (what
`make_pretrain_optimizer` returns on a CPU), `LayerDecayAdamW` (the fine-tuning optimizer) without and with it,
and `torch.optim.AdamW` on tensors of the same shapes as a for-loop (the reference's CPU default), with
`foreach=True` and with `fused=True`. Mean ms of `--steps` updates after
`--warmup`. `--keep_freed_memory` applies the apps' glibc setting first. Not a test: numbers go to BENCHMARKS.md.
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mean_ms(update, steps, warmup):
    for _ in range(warmup):
        update()
    start = time.perf_counter()
    for _ in range(steps):
        update()
    return 1000 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mae_vit_base_patch16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--keep_freed_memory", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import torch

    if keras.backend.backend() != "torch":
        sys.exit(f"KERAS_BACKEND={keras.backend.backend()}: this benchmark times the torch backend; use KERAS_BACKEND=torch.")
    if args.keep_freed_memory:
        from keras_mae.utils.malloc_tuning import keep_freed_memory

        keep_freed_memory()
    import keras_mae
    from keras_mae.models.presets import preset_config
    from keras_mae.optimizers import LayerDecayAdamW, make_pretrain_optimizer
    from keras_mae.optimizers.torch_fused_adamw import fuse_adamw_update

    model = keras_mae.MaskedAutoencoder(**preset_config(args.preset))
    variables = model.trainable_variables
    count = sum(math.prod(v.shape) for v in variables)
    generator = torch.Generator().manual_seed(0)
    grads = [1e-3 * torch.randn(tuple(v.shape), generator=generator) for v in variables]
    rows = []
    # The fine-tuning optimizer's per-variable rates, on this model's variables: 0.75 ** (depth of the path).
    multipliers = {v.path: 0.75 ** (v.path.count("/") % 4) for v in variables}
    for name, fused, layer_decay in (("keras AdamW (torch _foreach ops)", False, False),
                                     ("keras AdamW + torch_fused_adamw", True, False),
                                     ("LayerDecayAdamW (Keras's per-variable path)", False, True),
                                     ("LayerDecayAdamW + torch_fused_adamw", True, True)):
        if layer_decay:
            optimizer = LayerDecayAdamW(lr_multipliers=multipliers, learning_rate=1e-4, weight_decay=0.05)
            if fused:
                fuse_adamw_update(optimizer)
        else:
            optimizer = make_pretrain_optimizer(model, 1e-4, fused=fused)
        optimizer.build(variables)
        rows.append((name, mean_ms(lambda: optimizer.apply(grads, variables), args.steps, args.warmup)))
    params = [torch.nn.Parameter(torch.zeros(tuple(v.shape))) for v in variables]
    for p, g in zip(params, grads):
        p.grad = g
    for name, options in (("torch.optim.AdamW, for-loop (reference CPU default)", {"foreach": False}),
                          ("torch.optim.AdamW, foreach=True", {"foreach": True}),
                          ("torch.optim.AdamW, fused=True", {"fused": True})):
        optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, **options)
        rows.append((name, mean_ms(optimizer.step, args.steps, args.warmup)))
    print(f"\n{args.preset}: {len(variables)} variables, {count / 1e6:.1f}M parameters, "
          f"keep_freed_memory={args.keep_freed_memory}, {torch.get_num_threads()} threads")
    print("| update | ms |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
