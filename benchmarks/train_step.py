"""Pretraining throughput of keras_mae on each backend against a PyTorch reference, in one run.

    .venv/bin/python benchmarks/train_step.py --preset=mae_vit_tiny_patch4_28 --batch_size=256 \
        --backends=jax,tensorflow,torch --reference

For each backend (a subprocess each, so memory peaks are separate) it reports images/s (median of timed
windows after warm-up), peak RSS (and peak accelerator memory on a GPU), the model's FLOP/s and its
utilisation (MFU) of the matmul peak measured in the same process in the compute dtype and of the machine's
peak (the best of those processes' peaks), and the tf.data pipeline's images/s. `--reference` adds Hugging
Face transformers' `ViTMAEForPreTraining` (official initialisation) with torch AdamW on the same config (under
`torch.autocast` for the mixed policies). `--rounds=N` runs them all N times, alternating their order, and reports
medians and each round's ratio to the reference, for a machine whose speed drifts between processes. Not a test:
numbers go to BENCHMARKS.md.

On a GPU (no TensorFlow needed), the batch is kept on the device for every implementation (`--feed=resident`,
the default there: `model.fit` on a generator that repeats one on-device batch):

    python benchmarks/train_step.py --preset=mae_vit_base_patch16 --batch_size=256 \
        --dtype_policy=mixed_bfloat16 --backends=jax,torch --reference --steps=10 --warmup=5
"""

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A backend's variants in --backends (torch+jit, jax+unpadded, jax+autodiff, jax+written): the arguments its process
# gets, and its label.
VARIANTS = {"": ([], ""), "jit": (["--jit_compile=true"], " (jit_compile=True)"),
            "unpadded": (["--padded_attention=false"], " (unpadded attention)"),
            "autodiff": (["--written_gradients=false"], " (autodiff LayerNorm, GELU)"),
            "written": (["--fused_attention=false"], " (written-out attention)")}
sys.path.insert(0, ROOT)


def train_flops(config, batch):
    """Forward + backward FLOPs of one MAE step (3x the forward; multiply-add = 2 FLOPs)."""
    height, width = (config["image_size"],) * 2 if isinstance(config["image_size"], int) else config["image_size"]
    p, c = config["patch_size"], config["num_channels"]
    num_patches = (height // p) * (width // p)
    ratio = config.get("mask_ratio", 0.75)
    encoded = 1 + (num_patches if config.get("encode_mask_tokens") else int(num_patches * (1 - ratio)))

    d, dd = config["hidden_dim"], config["decoder_hidden_dim"]
    forward = 2 * num_patches * p * p * c * d + blocks_flops(encoded, d, config["mlp_dim"], config["num_layers"])
    forward += 2 * encoded * d * dd + blocks_flops(1 + num_patches, dd, config["decoder_mlp_dim"],
                                                   config["decoder_num_layers"])
    forward += 2 * (1 + num_patches) * dd * p * p * c
    return 3 * forward * batch


def blocks_flops(tokens, dim, mlp, layers):
    """Forward FLOPs of `layers` transformer blocks on `tokens` tokens (q/k/v/projection, attention, MLP)."""
    return layers * (2 * tokens * dim * 4 * dim + 4 * tokens * tokens * dim + 4 * tokens * dim * mlp)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_windows(step, steps, windows, warmup):
    for _ in range(warmup):
        step()
    durations = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        durations.append((time.perf_counter() - start) / steps)
    return statistics.median(durations)


def compute_dtype(policy):
    return {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(policy, "float32")


def on_gpu(framework):
    """Whether `framework` ("keras" on its backend, or "torch") runs on a GPU in this process."""
    if framework == "torch" or os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        return torch.cuda.is_available()
    if os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        return jax.default_backend() == "gpu"
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def matmul_peak(framework, dtype="float32", reps=10):
    """Best matmul FLOP/s of `framework` ("keras" on its backend, or "torch") in `dtype`, on its device."""
    import numpy as np

    n = 8192 if on_gpu(framework) else 2048
    a = np.random.default_rng(0).normal(size=(n, n)).astype("float32")
    if framework == "torch":
        import torch

        x = torch.from_numpy(a).to("cuda" if on_gpu("torch") else "cpu", getattr(torch, dtype))
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        run = lambda: (torch.matmul(x, x), sync())  # noqa: E731
    else:
        import keras

        x = keras.ops.convert_to_tensor(a, dtype=dtype)
        if keras.backend.backend() == "jax":
            import jax

            f = jax.jit(lambda t: t @ t)
            run = lambda: f(x).block_until_ready()  # noqa: E731
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            f = tf.function(lambda t: tf.matmul(t, t), jit_compile=True)
            run = lambda: f(x).numpy()  # noqa: E731
        else:
            import torch

            sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
            run = lambda: (keras.ops.matmul(x, x), sync())  # noqa: E731
    run()
    best = min(timed_windows(run, 1, reps, 1) for _ in range(3))
    return 2 * n**3 / best


def peak_device_mib(framework):
    """Peak accelerator memory of this process in MiB, or None on CPU."""
    if not on_gpu(framework):
        return None
    if framework == "torch" or os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    if os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        return jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def measure_keras(args, config):
    import keras
    import numpy as np

    import keras_mae
    from keras_mae.layers import fast_form, jax_padded_attention
    from keras_mae.optimizers import make_pretrain_optimizer

    keras.config.set_dtype_policy(args.dtype_policy)
    jax_padded_attention.ENABLED = args.padded_attention
    fast_form.WRITTEN_GRADIENTS = args.written_gradients
    fast_form.FUSED_ATTENTION = args.fused_attention
    model = keras_mae.MaskedAutoencoder(**config, seed=0)
    # The pretraining app's optimizer (AdamW, beta_2 0.95, wd 0.05 off biases and norms; fused on torch + CPU).
    optimizer = make_pretrain_optimizer(model, 1e-4, weight_decay=0.05, fused=args.fused_adamw)
    model.compile(optimizer=optimizer, jit_compile=args.jit_compile)
    images = np.random.default_rng(0).normal(size=(args.batch_size, *model.image_size, model.num_channels))
    images = images.astype("float32")

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # waits for the step on every backend
            stamps.append(time.perf_counter())

    if feed(args, "keras") == "resident":
        resident = keras.ops.convert_to_tensor(images)  # On the device, as the reference's batch.
        batches = ((resident,) for _ in itertools.count())
    else:
        import tensorflow as tf

        batches = tf.data.Dataset.from_tensors(images).repeat().prefetch(2)
    stamps = []
    total = args.warmup + args.windows * args.steps
    model.fit(batches, epochs=1, steps_per_epoch=total, callbacks=[Timer()], verbose=0, shuffle=False)
    windows = [(stamps[args.warmup - 1 + (i + 1) * args.steps] - stamps[args.warmup - 1 + i * args.steps]) / args.steps
               for i in range(args.windows)]
    return statistics.median(windows), matmul_peak("keras", compute_dtype(args.dtype_policy))


def feed(args, framework):
    """How batches reach the model: "fit" (tf.data through `model.fit`) or "resident" (one on-device batch)."""
    if args.feed != "auto":
        return args.feed
    return "resident" if on_gpu(framework) else "fit"


def reference_config(config):
    """The Hugging Face `ViTMAEConfig` of a keras_mae `MaskedAutoencoder` config (the reference's architecture)."""
    import transformers

    height = config["image_size"] if isinstance(config["image_size"], int) else config["image_size"][0]
    return transformers.ViTMAEConfig(
        image_size=height, patch_size=config["patch_size"], num_channels=config["num_channels"],
        hidden_size=config["hidden_dim"], num_hidden_layers=config["num_layers"], num_attention_heads=config["num_heads"],
        intermediate_size=config["mlp_dim"], decoder_hidden_size=config["decoder_hidden_dim"],
        decoder_num_hidden_layers=config["decoder_num_layers"], decoder_num_attention_heads=config["decoder_num_heads"],
        decoder_intermediate_size=config["decoder_mlp_dim"], mask_ratio=config.get("mask_ratio", 0.75),
        norm_pix_loss=config.get("norm_pix_loss", False), layer_norm_eps=1e-6, qkv_bias=True,
    )


def official_init(model, config):
    """facebookresearch/mae `initialize_weights` on a `ViTMAEForPreTraining`.

    transformers 5.x leaves both sin-cos position tables, `cls_token` and `mask_token` at zero when it builds
    the model from a config: with no position information the decoder can only predict each masked patch's mean,
    and the norm_pix loss stalls at that floor (0.758 on Fashion-MNIST, against 0.59 after 936 steps here).
    Two more places where Hugging Face's modules differ from the official ones are set as the official code
    does: q, k and v are separate Linear layers there, one fused `qkv` Linear in timm's `Attention`, so they
    get xavier_uniform drawn for the fused (3 * dim, dim) matrix (std sqrt(2 / (4 dim)), not sqrt(2 / (2 dim)));
    and the patch convolution's bias keeps PyTorch's default Conv2d init (the official code re-initialises only
    the weight), where transformers zeroes it.
    """
    import torch

    from keras_mae.layers.position_embedding import sincos_position_embedding

    size = config["image_size"]
    grid = (size if isinstance(size, int) else size[0]) // config["patch_size"]  # ViTMAEConfig is square
    with torch.no_grad():
        for table in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
            table.copy_(torch.from_numpy(sincos_position_embedding(grid, grid, table.shape[-1]))[None])
        for token in (model.vit.embeddings.cls_token, model.decoder.mask_token):
            torch.nn.init.normal_(token, std=0.02)
        projection = model.vit.embeddings.patch_embeddings.projection
        projection.reset_parameters()  # PyTorch's Conv2d init, the bias's as in the official PatchEmbed
        torch.nn.init.xavier_uniform_(projection.weight.view(projection.weight.shape[0], -1))
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                torch.nn.init.zeros_(module.bias)
            elif isinstance(module, torch.nn.LayerNorm):
                torch.nn.init.ones_(module.weight)
                torch.nn.init.zeros_(module.bias)
        for module in model.modules():  # after the Linear layers' own init (modules() gives parents first)
            names = next((n for n in (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))  # transformers 5, 4
                          if all(isinstance(getattr(module, a, None), torch.nn.Linear) for a in n)), None)
            if names:  # the official fused qkv's init
                parts = [getattr(module, name).weight for name in names]
                fused = torch.nn.init.xavier_uniform_(torch.empty(sum(p.shape[0] for p in parts), parts[0].shape[1]))
                for part, rows in zip(parts, fused.split([p.shape[0] for p in parts])):
                    part.copy_(rows)
    return model


def measure_reference(args, config):
    import torch
    import transformers

    height = config["image_size"] if isinstance(config["image_size"], int) else config["image_size"][0]
    hf = reference_config(config)
    device = "cuda" if on_gpu("torch") else "cpu"
    model = official_init(transformers.ViTMAEForPreTraining(hf), config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    images = torch.randn(args.batch_size, config["num_channels"], height, height, device=device)
    dtype = compute_dtype(args.dtype_policy)
    autocast = torch.autocast(device, dtype=getattr(torch, dtype), enabled=dtype != "float32")
    scaler = torch.amp.GradScaler(device, enabled=dtype == "float16")

    def step():
        with autocast:
            loss = model(pixel_values=images).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        loss.item()

    seconds = timed_windows(step, args.steps, args.windows, args.warmup)
    return seconds, matmul_peak("torch", dtype)


def measure_pipeline(args, config):
    if not args.dataset:
        return None
    from keras_mae import data

    ds = data.make_pretrain_dataset(args.dataset, config["image_size"], args.batch_size, seed=0)
    iterator = iter(ds.repeat())
    return args.batch_size / timed_windows(lambda: next(iterator), 5, 3, 2)


def run_one(args, role):
    from keras_mae.models.presets import preset_config

    config = preset_config(args.preset)
    config.update(json.loads(args.overrides))
    if role == "reference":
        seconds, peak = measure_reference(args, config)
        pipeline, framework = None, "torch"
    else:
        seconds, peak = measure_keras(args, config)
        pipeline, framework = measure_pipeline(args, config), "keras"
    flops = train_flops(config, args.batch_size) / seconds
    print(json.dumps({
        "role": role, "images_per_sec": args.batch_size / seconds, "ms_per_step": 1000 * seconds,
        "peak_rss_mib": peak_rss_mib(), "peak_device_mib": peak_device_mib(framework),
        "model_gflops": flops / 1e9, "matmul_peak_gflops": peak / 1e9, "mfu": flops / peak,
        "pipeline_images_per_sec": pipeline, "device": "gpu" if on_gpu(framework) else "cpu",
        **({"padded_attention_traces": padded_attention_traces()} if role != "reference" else {}),
    }))


def padded_attention_traces():
    """How many attention calls the model traced padded for cuDNN, and how many cuDNN refused (jax GPUs only)."""
    from keras_mae.layers import jax_padded_attention

    return dict(jax_padded_attention.TRACE_COUNTS)


def combine_rounds(rounds):
    """One implementation's results over the rounds: the median of each rate, the largest memory peak."""
    combined = dict(rounds[0])
    for key in ("images_per_sec", "ms_per_step", "model_gflops", "matmul_peak_gflops", "mfu", "pipeline_images_per_sec"):
        values = [r[key] for r in rounds if r[key] is not None]
        combined[key] = statistics.median(values) if values else None
    for key in ("peak_rss_mib", "peak_device_mib"):
        values = [r[key] for r in rounds if r[key] is not None]
        combined[key] = max(values) if values else None
    return combined


def ratio_to_reference(rounds, reference_rounds):
    """Images/s against the reference's in the same round: "1.05x", or over rounds the median and range."""
    if rounds is reference_rounds:
        return "1.00x"
    reference = {r["round"]: r["images_per_sec"] for r in reference_rounds}
    ratios = sorted(r["images_per_sec"] / reference[r["round"]] for r in rounds if r["round"] in reference)
    if not ratios:
        return "-"
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}x"
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def true_or_false(value):
    """An argparse type: "true" or "false", nothing else."""
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{value!r}: give true or false")
    return value.lower() == "true"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mae_vit_tiny_patch4_28")
    parser.add_argument("--overrides", default="{}", help='JSON constructor overrides, e.g. {"mask_ratio": 0.5}')
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--reference", action="store_true", help="also time HF ViTMAEForPreTraining + torch AdamW")
    parser.add_argument("--dataset", default=None, help="also time the tf.data pipeline on this dataset")
    parser.add_argument("--dtype_policy", default="float32")
    parser.add_argument("--jit_compile", default="auto", type=lambda v: {"true": True, "false": False}.get(v, v),
                        help="passed to model.compile: auto, true (torch backend: the captured step, "
                             "keras_mae/models/torch_captured_step.py; jax, tensorflow: XLA) or false; a backend "
                             "named with +jit in --backends (torch+jit) gets true whatever this says")
    parser.add_argument("--padded_attention", default=True, type=true_or_false,
                        help="true (the library's default): jax on a GPU pads an odd token count by one for cuDNN's "
                             "flash attention (keras_mae/layers/jax_padded_attention.py); false: Keras's own call; "
                             "a backend named with +unpadded in --backends (jax+unpadded) gets false")
    parser.add_argument("--written_gradients", default=True, type=true_or_false,
                        help="true (the library's default): LayerNorm and GELU outside torch differentiate by their "
                             "written-out gradients, which keep only their input (keras_mae/layers/fast_form.py); "
                             "false: autodiff of the same forward; jax+autodiff or tensorflow+autodiff gets false")
    parser.add_argument("--fused_attention", default=True, type=true_or_false,
                        help="true (the library's default): on a GPU, jax and tensorflow attend with XLA's fused "
                             "kernel (cuDNN); false: the written-out attention with its recomputing gradient, as on "
                             "a CPU (keras_mae/layers/fast_form.py); jax+written or tensorflow+written gets false")
    parser.add_argument("--feed", default="auto", choices=["auto", "fit", "resident"],
                        help="fit: a tf.data pipeline; resident: one on-device batch, repeated; "
                             "auto: resident on a GPU, else fit")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--keep_freed_memory", action="store_true",
                        help="glibc keeps freed blocks <= 32 MiB (keras_mae.utils.malloc_tuning), in every process")
    parser.add_argument("--fused_adamw", default=True, type=true_or_false,
                        help="true (the app's default): the torch backend on a CPU updates with the fused kernel "
                             "(keras_mae.optimizers.torch_fused_adamw); false: Keras's AdamW as it ships")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every implementation this many times, alternating their order; report medians and "
                             "each round's ratio to the reference (a machine whose speed drifts)")
    parser.add_argument("--role", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1. Received: {args.rounds}")
    if args.role:
        if args.keep_freed_memory:
            from keras_mae.utils.malloc_tuning import keep_freed_memory

            keep_freed_memory()
        return run_one(args, args.role)

    roles = [("keras_mae", b) for b in args.backends.split(",") if b] + ([("reference", "torch")] if args.reference else [])
    for _, backend in roles:
        name, variant = backend.partition("+")[::2]
        if variant not in VARIANTS or (variant == "unpadded" and name != "jax") or (
                variant in ("autodiff", "written") and name == "torch"):
            raise SystemExit(f"--backends: {backend} is not a variant this script runs; use torch+jit, jax+jit "
                             "(any backend +jit), jax+unpadded, jax+autodiff, tensorflow+autodiff, jax+written or "
                             "tensorflow+written")
    runs, failed = {}, []  # (role, label) -> one result per round
    for round_ in range(args.rounds):
        # Odd rounds run the roles in reverse, so no implementation always runs first or last on a drifting machine.
        for role, backend in roles if round_ % 2 == 0 else roles[::-1]:
            backend, variant = backend.partition("+")[::2]  # torch+jit: jit_compile=True; jax+unpadded: no padding
            label = backend + VARIANTS[variant][1]
            if (role, label) in failed:
                continue
            command = [sys.executable, __file__, *sys.argv[1:], f"--role={role}", *VARIANTS[variant][0]]
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
            out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                failed.append((role, label))
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result.update(backend=label, round=round_)
            runs.setdefault((role, label), []).append(result)
            print(json.dumps(result), file=sys.stderr)
    results = [combine_rounds(r) for key, r in runs.items() if key not in failed]
    reference_runs = next((r for (role, _), r in runs.items() if role == "reference"), None)
    print(f"\n{args.preset} {args.overrides} batch {args.batch_size} {args.dtype_policy} jit_compile={args.jit_compile}"
          + (f"; medians of {args.rounds} rounds, vs reference: the median of the rounds' ratios (range)"
             if args.rounds > 1 else ""))
    # The machine's peak in this dtype: the best matmul rate any of the processes measured (MFU's denominator
    # should not reward a framework for a slow matmul of its own).
    machine_peak = max((r["matmul_peak_gflops"] for r in results), default=0.0)
    print("| implementation | backend | device | images/s | vs reference | ms/step | peak RSS MiB | peak device MiB "
          "| GFLOP/s | matmul peak GFLOP/s | MFU | MFU of machine peak | pipeline images/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = ratio_to_reference(runs[(r["role"], r["backend"])], reference_runs) if reference_runs else "-"
        pipeline = f"{r['pipeline_images_per_sec']:.0f}" if r["pipeline_images_per_sec"] else "-"
        name = "HF ViTMAE (PyTorch reference)" if r["role"] == "reference" else "keras_mae"
        device_mib = f"{r['peak_device_mib']:.0f}" if r["peak_device_mib"] else "-"
        print(f"| {name} | {r['backend']} | {r['device']} | {r['images_per_sec']:.4g} | {ratio} | "
              f"{r['ms_per_step']:.1f} | {r['peak_rss_mib']:.0f} | {device_mib} | {r['model_gflops']:.1f} | "
              f"{r['matmul_peak_gflops']:.0f} | {100 * r['mfu']:.1f}% | {100 * r['model_gflops'] / machine_peak:.1f}% | "
              f"{pipeline} |")
    if failed:
        raise SystemExit(f"failed (their errors above): {', '.join(' '.join(f) for f in failed)}")


if __name__ == "__main__":
    main()
