"""Time to accuracy: minutes of MAE pretraining until the linear probe reaches --target top-1 on Fashion-MNIST.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/time_to_accuracy.py --workdir=/tmp/tta_torch
    KERAS_BACKEND=torch .venv/bin/python benchmarks/time_to_accuracy.py --implementation=reference \
        --workdir=/tmp/tta_reference

The demo recipe (apps/configs/fashion_mnist.flags: 936 steps of 256 images, one warm-up epoch, cosine) is run
as --points pseudo-epochs of 936 / points steps, so the per-step learning rate is the demo's and each
pseudo-epoch ends in a checkpoint. keras_mae runs apps/pretrain.py; `--implementation=reference` trains Hugging
Face's `ViTMAEForPreTraining` (the official architecture and initialisation, same config) with
`torch.optim.AdamW` (the official parameter groups: no weight decay on biases and norms) and the official
per-step schedule, on the same tf.data
batches (random resized crop + flip, the same normalisation). Pretraining time is the training steps' wall time
(data included; not start-up, checkpoints or probes). Then each checkpoint's encoder, oldest first, is
linear-probed with apps/configs/linprobe_fashion_mnist.flags (cached features; trained on the 60,000 training
images, top-1 on the 10,000 test images; on --probe_backend, torch by default, for every implementation) until
one reaches --target. Prints a markdown row and appends it to
<workdir>/time_to_accuracy.md. Not a test: numbers go to BENCHMARKS.md.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TRAIN_IMAGES = 60000

flags.DEFINE_enum("implementation", "keras_mae", ["keras_mae", "reference"], "What pretrains.")
flags.DEFINE_float("target", 0.80, "Linear-probe top-1 to reach, in [0, 1].")
flags.DEFINE_integer("points", 8, "Checkpoints (pseudo-epochs) the demo's steps are cut into; must divide them.")
flags.DEFINE_string("workdir", None, "Where the runs go; defaults to /tmp/time_to_accuracy_<implementation>_<backend>.")
flags.DEFINE_string("pretrain_flagfile", os.path.join(ROOT, "apps/configs/fashion_mnist.flags"), "The recipe.")
flags.DEFINE_string("probe_flagfile", os.path.join(ROOT, "apps/configs/linprobe_fashion_mnist.flags"), "The probe.")
flags.DEFINE_list("pretrain_args", [], "Extra apps/pretrain.py flags, e.g. --pretrain_args=--dtype_policy=mixed_bfloat16.")
flags.DEFINE_string("probe_backend", "torch", "KERAS_BACKEND of the probes, the same for every implementation "
                    "(torch: the fastest feature extraction here); empty: the pretraining's.")
flags.DEFINE_list("probe_args", [], "Extra apps/linear_probe.py flags, e.g. --probe_args=--epochs=10.")
flags.DEFINE_integer("seed", None, "Overrides the recipe's --seed, for either implementation (a repeat of a run).")
FLAGS = flags.FLAGS


def recipe():
    """The flag file's settings as a dict of strings (the last value of a flag wins)."""
    values = {}
    for line in open(FLAGS.pretrain_flagfile):
        line = line.strip()
        if line.startswith("--"):
            name, _, value = line[2:].partition("=")
            values[name] = value or "true"
    if FLAGS.seed is not None:
        values["seed"] = str(FLAGS.seed)
    return values


def plan(values):
    """(steps per point, warm-up points, points): the demo's schedule cut into FLAGS.points pseudo-epochs."""
    steps_per_epoch = TRAIN_IMAGES // int(values["batch_size"])
    total, warmup = int(values["epochs"]) * steps_per_epoch, int(values["warmup_epochs"]) * steps_per_epoch
    if total % FLAGS.points or warmup % (total // FLAGS.points):
        raise app.UsageError(f"--points={FLAGS.points} must divide the recipe's {total} steps and its {warmup} "
                             f"warm-up steps; try --points=4 or 8.")
    return total // FLAGS.points, warmup // (total // FLAGS.points), FLAGS.points


def run(script, args, backend=None):
    command = [sys.executable, os.path.join(ROOT, "apps", script), *args]
    print("$", " ".join(command), flush=True)
    env = dict(os.environ, KERAS_BACKEND=backend) if backend else None
    subprocess.run(command, check=True, cwd=ROOT, env=env)


def pretrain_keras_mae(workdir, steps, warmup, points, values):
    """apps/pretrain.py in pseudo-epochs; returns [(pseudo-epochs, cumulative seconds, point folder)]."""
    from keras_mae import MaskedAutoencoder, runs
    from keras_mae.callbacks.checkpoint import checkpoint_records

    pretrain = os.path.join(workdir, "pretrain")
    run("pretrain.py", [f"--flagfile={FLAGS.pretrain_flagfile}", f"--workdir={pretrain}", f"--epochs={points}",
                        f"--warmup_epochs={warmup}", f"--steps_per_epoch={steps}", f"--keep_checkpoints={points}",
                        "--eval_every=0", f"--reconstruction_every={points}", "--verbose=2",
                        f"--seed={values.get('seed', 0)}", *FLAGS.pretrain_args])
    with open(os.path.join(pretrain, "log.jsonl")) as f:
        seconds = {record["epoch"]: record["seconds"] for record in map(json.loads, f)}
    record = runs.read_run(pretrain)
    result = []
    for meta in checkpoint_records(os.path.join(pretrain, runs.CHECKPOINT_DIR)):
        if meta["step_in_epoch"]:
            continue
        epoch = meta["epoch"]

        def export(folder, weights=meta["weights"]):
            model = MaskedAutoencoder.from_config(record["model_config"])
            model.load_weights(weights)
            model.encoder.save(os.path.join(folder, runs.ENCODER_FILE))

        result.append((epoch, sum(seconds[e] for e in range(1, epoch + 1)),
                       point_folder(workdir, epoch, record, export)))
    return result


def point_folder(workdir, epoch, record, export):
    """A workdir holding one point's encoder.keras and the run's run.json (so the probe uses its normalisation)."""
    from keras_mae import runs
    from keras_mae.utils.atomic import write_json_atomic

    folder = os.path.join(workdir, "points", f"point_{epoch:02d}")
    if not os.path.isfile(os.path.join(folder, runs.ENCODER_FILE)):
        os.makedirs(folder, exist_ok=True)
        export(folder)
    write_json_atomic(os.path.join(folder, runs.RUN_RECORD), record)
    return folder


def pretrain_reference(workdir, steps, warmup, points, values):
    """HF ViTMAEForPreTraining + torch AdamW, official groups and schedule, on our batches; see the module doc."""
    import numpy as np
    import torch
    import transformers

    from benchmarks.train_step import official_init, reference_config
    from keras_mae import checkpoints, data
    from keras_mae.models.presets import preset_config

    config = preset_config(values["preset"])
    config.update(norm_pix_loss="norm_pix_loss" in values, mask_ratio=float(values.get("mask_ratio", 0.75)))
    batch, seed = int(values["batch_size"]), int(values.get("seed", 0))
    torch.manual_seed(seed)
    model = official_init(transformers.ViTMAEForPreTraining(reference_config(config)), config).train()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim <= 1 or n.endswith(".bias"))]
    lr = float(values["base_lr"]) * batch / 256  # the official absolute lr
    optimizer = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                   {"params": decay, "weight_decay": float(values["weight_decay"])}],
                                  lr=lr, betas=(0.9, 0.95))
    total, warmup_steps = points * steps, warmup * steps

    def learning_rate(step):  # official util/lr_sched.adjust_learning_rate, per step, min_lr 0
        if step < warmup_steps:
            return lr * step / warmup_steps
        return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / (total - warmup_steps)))

    source = data.load_source(values["dataset"], num_channels=config["num_channels"])
    mean, std = source.mean, source.std
    batches = iter(data.make_pretrain_dataset(source, config["image_size"], batch, seed=seed, steps_per_epoch=steps,
                                              mean=mean, std=std))
    record = {"dataset": values["dataset"], "eval_dataset": None,
              "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    result, elapsed, step = [], 0.0, 0
    for point in range(1, points + 1):
        start, losses = time.perf_counter(), []
        for _ in range(steps):
            images = torch.from_numpy(np.array(next(batches))).permute(0, 3, 1, 2)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step)
            loss = model(pixel_values=images).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
        elapsed += time.perf_counter() - start
        print(f"reference point {point}/{points}: loss {np.mean(losses):.4f}, {elapsed:.0f} s", flush=True)
        state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        ours = checkpoints.load_model(state, num_heads=config["num_heads"], decoder_num_heads=config["decoder_num_heads"],
                                      norm_pix_loss=config["norm_pix_loss"], mask_ratio=config["mask_ratio"])
        record["model_config"] = ours.get_config()
        result.append((point, elapsed, point_folder(
            workdir, point, dict(record), lambda folder, ours=ours: ours.encoder.save(os.path.join(folder, "encoder.keras")))))
    return result


def probe(workdir, folder):
    """Linear-probe top-1 (on the test images) of one point's encoder."""
    probe_dir = os.path.join(workdir, "probes", os.path.basename(folder))
    result_path = os.path.join(probe_dir, "linear_probe.json")
    if not os.path.isfile(result_path):
        shutil.rmtree(probe_dir, ignore_errors=True)
        run("linear_probe.py", [f"--flagfile={FLAGS.probe_flagfile}", f"--encoder={folder}", f"--workdir={probe_dir}",
                                "--cache_features", "--verbose=0", *FLAGS.probe_args], backend=FLAGS.probe_backend)
    with open(result_path) as f:
        result = json.load(f)
    return result["pretrained"]["top1"], result["num_eval"]


def main(argv):
    if not 0 < FLAGS.target <= 1:
        raise app.UsageError(f"--target={FLAGS.target} is a fraction in (0, 1], e.g. --target=0.8.")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    workdir = FLAGS.workdir or f"/tmp/time_to_accuracy_{FLAGS.implementation}_{backend}"
    os.makedirs(workdir, exist_ok=True)
    values = recipe()
    steps, warmup, points = plan(values)
    if FLAGS.implementation == "reference":
        timeline, name, backend = pretrain_reference(workdir, steps, warmup, points, values), "PyTorch reference", "torch"
    else:
        timeline, name = pretrain_keras_mae(workdir, steps, warmup, points, values), "keras_mae"
    batch, reached, seen = int(values["batch_size"]), None, []
    for point, seconds, folder in timeline:
        top1, num_eval = probe(workdir, folder)
        seen.append(f"{point * steps} steps {seconds / 60:.1f} min {100 * top1:.1f}%")
        print(f"point {point}: {point * steps} steps, {seconds:.0f} s of pretraining, probe top-1 {100 * top1:.2f}% "
              f"({num_eval} test images)", flush=True)
        if top1 >= FLAGS.target:
            reached = (point, seconds, top1)
            break
    images_per_sec = points * steps * batch / timeline[-1][1]
    if reached:
        point, seconds, top1 = reached
        outcome = f"**{seconds / 60:.1f} min** ({point * steps} steps) | {100 * top1:.1f}%"
    else:
        outcome = f"not reached in {points * steps} steps ({timeline[-1][1] / 60:.1f} min) | -"
    header = ("| implementation | backend | minutes to target (steps) | top-1 there | probes (steps, minutes, top-1) "
              "| pretraining images/s |\n|---|---|---|---|---|---|")
    row = (f"| {name} | {backend}, seed {values.get('seed', 0)} | {outcome} | {'; '.join(seen)} (top-1 on {num_eval} test images) "
           f"| {images_per_sec:.0f} |")
    print(f"\nTarget: linear-probe top-1 >= {100 * FLAGS.target:g}% on the Fashion-MNIST test images\n{header}\n{row}")
    with open(os.path.join(workdir, "time_to_accuracy.md"), "a") as f:
        f.write(row + "\n")


if __name__ == "__main__":
    app.run(main)
