"""MAE pretraining: flags -> data -> model -> fit -> checkpoints, TensorBoard and an encoder for downstream use.

    KERAS_BACKEND=jax python apps/pretrain.py --flagfile=apps/configs/fashion_mnist.flags --workdir=runs/fmnist

Rerunning the same command resumes from the last complete checkpoint in --workdir.
"""

import os

import numpy as np
from absl import app, flags

import common

common.define_model_flags()
flags.DEFINE_string("dataset", "fashion_mnist", "fashion_mnist, mnist, cifar10, cifar100, tfds:NAME, a folder of images or a .npz file.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (prepared datasets such as ImageNet).")
common.define_split_flags()
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and the final model go.", required=True)
flags.DEFINE_integer("epochs", 800, "Training epochs.")
flags.DEFINE_integer("warmup_epochs", 40, "Linear warm-up epochs.")
flags.DEFINE_integer("batch_size", 256, "Images per step (per optimizer update: batch_size * accum_steps).")
flags.DEFINE_integer("accum_steps", 1, "Gradient accumulation steps (official accum_iter).")
flags.DEFINE_float("base_lr", 1.5e-4, "Learning rate = base_lr * batch_size * accum_steps / 256.")
flags.DEFINE_float("lr", None, "Absolute peak learning rate; overrides base_lr.")
flags.DEFINE_float("min_lr", 0.0, "Learning rate at the end of the cosine.")
flags.DEFINE_float("weight_decay", 0.05, "AdamW weight decay (not on biases and norms).")
flags.DEFINE_float("clip_grad", None, "Clip the global gradient norm (the official answer to fp16 NaNs).")
flags.DEFINE_integer("steps_per_epoch", None, "Cap steps per epoch (smoke runs); default one pass.")
flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation, masking and initialisation.")
flags.DEFINE_integer("checkpoint_every", 1, "Epochs between checkpoints.")
flags.DEFINE_integer("keep_checkpoints", 3, "Complete checkpoints kept.")
flags.DEFINE_integer("reconstruction_every", 1, "Epochs between reconstruction summaries.")
flags.DEFINE_integer("num_reconstructions", 8, "Images in the reconstruction summaries.")
flags.DEFINE_integer("eval_every", 1, "Epochs between validation reconstruction losses on the evaluation split (0: off).")
flags.DEFINE_integer("num_eval_images", 10000, "Evaluation images the validation loss is computed on (a fixed subset).")
flags.DEFINE_integer("knn_every", 0, "Epochs between kNN accuracy checks on labelled data (0: off).")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "XLA / jit compilation of the train step.")
flags.DEFINE_string("dtype_policy", "float32", "float32, mixed_bfloat16 or mixed_float16.")
flags.DEFINE_enum("distribution", "none", ["none", "data_parallel", "mirrored", "multi_worker_mirrored", "tpu", "ddp"],
                  "Multi-device engine: data_parallel (jax), mirrored / multi_worker_mirrored / tpu (tensorflow).")
flags.DEFINE_integer("verbose", 1, "Keras progress output: 0 silent, 1 bar, 2 one line per epoch.")
FLAGS = flags.FLAGS

RUN_FLAGS = ["preset", *common.MODEL_FLAGS, "dataset", "data_dir", "eval_dataset", "val_fraction", "eval_split", "workdir", "epochs", "warmup_epochs",
             "batch_size", "accum_steps", "base_lr", "lr", "min_lr", "weight_decay", "clip_grad", "steps_per_epoch",
             "seed", "checkpoint_every", "keep_checkpoints", "reconstruction_every", "num_reconstructions",
             "eval_every", "num_eval_images", "knn_every", "jit_compile", "dtype_policy", "distribution"]


def check_flags():
    import keras

    for name in ("epochs", "batch_size", "accum_steps", "checkpoint_every", "keep_checkpoints", "num_eval_images"):
        if getattr(FLAGS, name) < 1:
            raise common.UserError(f"--{name} must be at least 1. Received: --{name}={getattr(FLAGS, name)}")
    if not 0 <= FLAGS.warmup_epochs <= FLAGS.epochs:
        raise common.UserError(f"--warmup_epochs must be in [0, epochs={FLAGS.epochs}]. Received: {FLAGS.warmup_epochs}")
    if FLAGS.dtype_policy not in ("float32", "mixed_bfloat16", "mixed_float16", "bfloat16"):
        raise common.UserError(f"--dtype_policy must be float32, mixed_bfloat16 or mixed_float16. Received: {FLAGS.dtype_policy}")
    if FLAGS.dtype_policy == "mixed_float16" and keras.backend.backend() == "jax" and not _jax_has_gpu():
        raise common.UserError("--dtype_policy=mixed_float16 needs a GPU on the jax backend (XLA:CPU has no float16 "
                               "matmul with float32 accumulation); use --dtype_policy=mixed_bfloat16 on CPU.")


def _jax_has_gpu():
    import jax

    return any(device.platform == "gpu" for device in jax.devices())


def main(argv):
    import keras

    import keras_mae
    from keras_mae import callbacks, data, optimizers
    from keras_mae.distribution import setup_distribution
    from keras_mae.utils.atomic import write_json_atomic

    config = common.model_config(FLAGS)
    check_flags()
    keras.config.set_dtype_policy(FLAGS.dtype_policy)
    keras.utils.set_random_seed(FLAGS.seed)
    scope, replicas = setup_distribution(FLAGS.distribution)
    if FLAGS.batch_size % replicas:
        raise common.UserError(f"--batch_size={FLAGS.batch_size} (global) must be divisible by the {replicas} replicas.")
    with scope():
        model = keras_mae.MaskedAutoencoder(**config, seed=FLAGS.seed, eval_mask_seed=FLAGS.seed)  # validates sizes
    common.check_workdir(FLAGS.workdir, needed_bytes=3 * 4 * model.count_params())

    split = common.split_data(FLAGS, FLAGS.dataset, model.num_channels, FLAGS.workdir)
    source = split.train
    if source.num_examples is not None and source.num_examples < FLAGS.batch_size:
        raise common.UserError(f"{FLAGS.dataset!r} has {source.num_examples} training images, fewer than "
                               f"--batch_size={FLAGS.batch_size}; lower --batch_size.")
    steps = (source.num_examples or 0) // FLAGS.batch_size
    if FLAGS.steps_per_epoch:
        steps = min(steps, FLAGS.steps_per_epoch) if steps else FLAGS.steps_per_epoch
    if steps < 1:
        raise common.UserError(f"{FLAGS.dataset!r} has fewer than --batch_size={FLAGS.batch_size} images; lower --batch_size.")

    effective_batch = FLAGS.batch_size * FLAGS.accum_steps
    peak_lr = FLAGS.lr if FLAGS.lr is not None else FLAGS.base_lr * effective_batch / 256
    schedule = optimizers.WarmupCosineDecay(peak_lr, FLAGS.warmup_epochs * steps, FLAGS.epochs * steps, FLAGS.min_lr)
    with scope():
        model.compile(
            optimizer=optimizers.make_pretrain_optimizer(
                model, schedule, FLAGS.weight_decay,
                gradient_accumulation_steps=FLAGS.accum_steps if FLAGS.accum_steps > 1 else None,
                global_clipnorm=FLAGS.clip_grad,
            ),
            jit_compile={"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile],
        )

    workdir = FLAGS.workdir
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    initial_epoch = callbacks.restore_latest(model, checkpoint_dir)
    if initial_epoch:
        print(f"Resuming from epoch {initial_epoch} (step {int(model.optimizer.iterations)}) in {checkpoint_dir}")
    # Epoch e's order and crops depend on (seed, e) only: a resumed run sees the batches of an uninterrupted one.
    train = data.make_pretrain_dataset(source, model.image_size, FLAGS.batch_size, seed=FLAGS.seed,
                                       steps_per_epoch=steps, initial_epoch=initial_epoch)
    common.write_flags(FLAGS, os.path.join(workdir, "flags.txt"), RUN_FLAGS)
    run = {"model_config": model.get_config(), "dataset": split.record["dataset"],
           "eval_dataset": split.record["eval_dataset"], "mean": list(source.mean), "std": list(source.std)}
    write_json_atomic(os.path.join(workdir, "run.json"), run)

    # The figure's images: evaluation images (never trained on), one class after another.
    figure_source = data.fixed_subset(split.eval or source, FLAGS.num_reconstructions, FLAGS.seed, balanced=True)
    shown = next(iter(data.make_eval_dataset(figure_source, model.image_size, FLAGS.num_reconstructions,
                                             with_labels=False, mean=source.mean, std=source.std)))
    nan_guard = callbacks.StopOnNonFiniteLoss(checkpoint_dir)
    validation, validation_info = validation_data(split, model, replicas)
    reconstructions = callbacks.ReconstructionSummary(
        keras.ops.convert_to_numpy(shown), source.mean, source.std, os.path.join(workdir, "tensorboard", "images"),
        os.path.join(workdir, "reconstructions"), FLAGS.reconstruction_every, seed=FLAGS.seed,
    )
    fit_callbacks = [
        nan_guard,
        *knn_monitor(split, model, workdir),  # before TrainingLog, so knn_top1 reaches log.jsonl
        callbacks.TrainingLog(FLAGS.batch_size, os.path.join(workdir, "log.jsonl"), validation=validation_info),
        callbacks.EpochCheckpoint(checkpoint_dir, FLAGS.checkpoint_every, FLAGS.keep_checkpoints),
        reconstructions,
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"), write_graph=False),
    ]
    common.training_started()
    if initial_epoch < FLAGS.epochs:
        model.fit(train, epochs=FLAGS.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                  validation_data=validation, validation_freq=max(FLAGS.eval_every, 1),
                  callbacks=fit_callbacks, verbose=FLAGS.verbose, shuffle=False)
    if nan_guard.message:
        raise SystemExit(f"pretrain.py: {nan_guard.message}")
    save_final(model, workdir, reconstructions)


def validation_data(split, model, replicas):
    """The fixed evaluation images of the per-epoch validation loss (masks fixed by the model's eval_mask_seed)."""
    from keras_mae import data

    if not FLAGS.eval_every or split.eval is None:
        print("Validation:       off" + (" (no evaluation split)" if split.eval is None else ""))
        return None, None
    held = data.fixed_subset(split.eval, FLAGS.num_eval_images, FLAGS.seed)
    batch_size = min(FLAGS.batch_size, held.num_examples or FLAGS.batch_size)
    if replicas > 1:  # every batch must split evenly over the replicas
        batch_size -= batch_size % replicas
        usable = (held.num_examples // batch_size) * batch_size if batch_size else 0
        if not usable:
            print(f"Validation:       off ({held.num_examples} evaluation images for {replicas} replicas)")
            return None, None
        held = held.subset(np.arange(usable)) if held.key_table is not None else held
    print(f"Validation:       reconstruction loss on {held.num_examples} {split.eval_name} images "
          f"every {FLAGS.eval_every} epoch(s), masks fixed by seed {model.eval_mask_seed}")
    dataset = data.make_eval_dataset(held, model.image_size, batch_size, with_labels=False,
                                     mean=split.train.mean, std=split.train.std)
    return dataset, {"val_split": split.eval_name, "val_images": held.num_examples}


def knn_monitor(split, model, workdir):
    """A KNNMonitor on labelled data, when --knn_every asks for one.

    The memory bank is 10,000 training images and the evaluated set 2,000 evaluation images, the same ones every
    time: a fixed-seed draw (not only the first images, which in a folder of class folders are few classes).
    """
    if not FLAGS.knn_every:
        return []
    try:
        split.require_labelled_eval("--knn_every")
    except ValueError as error:
        raise common.UserError(str(error))
    from keras_mae import callbacks, data

    def subset(source, n):
        return data.make_eval_dataset(data.fixed_subset(source, n, FLAGS.seed), model.image_size, 256,
                                      mean=split.train.mean, std=split.train.std)

    print(f"kNN monitor:      2,000 {split.eval_name} images against 10,000 training images, every "
          f"{FLAGS.knn_every} epoch(s)")
    return [callbacks.KNNMonitor(subset(split.train, 10000), subset(split.eval, 2000), FLAGS.knn_every,
                                 log_dir=os.path.join(workdir, "tensorboard", "knn"))]


def save_final(model, workdir, reconstructions):
    from keras_mae.utils.atomic import atomic_path

    with atomic_path(os.path.join(workdir, "model.keras")) as tmp:
        model.save(tmp)
    with atomic_path(os.path.join(workdir, "encoder.keras")) as tmp:
        model.encoder.save(tmp)
    with atomic_path(os.path.join(workdir, "encoder.weights.h5")) as tmp:
        model.encoder.save_weights(tmp)
    print(f"\nModel:            {os.path.join(workdir, 'model.keras')}")
    print(f"Encoder:          {os.path.join(workdir, 'encoder.keras')} (weights: encoder.weights.h5)")
    print(f"Checkpoints:      {os.path.join(workdir, 'checkpoints')}")
    if reconstructions.last_png:
        print(f"Reconstructions:  {reconstructions.last_png}")
    print(f"TensorBoard:      tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")


if __name__ == "__main__":
    app.run(common.run_main(main))
