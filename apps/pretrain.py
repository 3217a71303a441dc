"""MAE pretraining: flags -> data -> model -> fit -> checkpoints, TensorBoard and an encoder for downstream use.

    KERAS_BACKEND=jax python apps/pretrain.py --flagfile=apps/configs/fashion_mnist.flags --workdir=runs/fmnist

Rerunning the same command resumes from the last complete checkpoint in --workdir.
"""

import os
import sys
import tempfile

import numpy as np
from absl import app, flags

if __name__ == "__main__":  # before Keras loads: glibc reads the setting only at process start (huge_pages.py)
    import huge_pages

    huge_pages.restart_with_huge_pages()

import common  # noqa: E402
import recipe  # noqa: E402

common.define_model_flags()
common.define_data_flags("fashion_mnist", "fashion_mnist, mnist, cifar10, cifar100, tfds:NAME, a folder of images or a "
                         ".npz file.")
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and the final model go.", required=True)
recipe.define_training_flags(
    epochs=800, warmup_epochs=40, batch_size=256, base_lr=1.5e-4, weight_decay=0.05, keep_checkpoints=3, verbose=1,
    accumulation=True, compilation=True, seed_help="Seed of data order, augmentation, masking and initialisation.",
    base_lr_help="Learning rate = base_lr * batch_size * accum_steps / 256.",
    weight_decay_help="AdamW weight decay (not on biases and norms).")
recipe.define_resume_flags()
flags.DEFINE_integer("reconstruction_every", 1, "Epochs between reconstruction summaries.")
flags.DEFINE_integer("num_reconstructions", 8, "Images in the reconstruction summaries.")
flags.DEFINE_integer("eval_every", 1, "Epochs between validation reconstruction losses on the evaluation split (0: off).")
flags.DEFINE_integer("num_eval_images", 10000, "Evaluation images the validation loss is computed on (a fixed subset).")
flags.DEFINE_integer("knn_every", 0, "Epochs between kNN accuracy checks on labelled data (0: off).")
common.define_distribution_flag()
FLAGS = flags.FLAGS


def check_flags(config):
    import keras

    recipe.check_training_flags("num_eval_images")
    if config.get("mask_ratio", 0.75) == 0:
        print("pretrain.py: warning: --mask_ratio=0 masks no patch, so the reconstruction loss has nothing to score "
              "(it is 0 and nothing is learned); the paper's ratio is 0.75.", file=sys.stderr)
    if FLAGS.dtype_policy == "mixed_float16" and keras.backend.backend() == "jax" and not _jax_has_gpu():
        raise common.UserError("--dtype_policy=mixed_float16 needs a GPU on the jax backend (XLA:CPU has no float16 "
                               "matmul with float32 accumulation); use --dtype_policy=mixed_bfloat16 on CPU.")


def _jax_has_gpu():
    import jax

    return any(device.platform == "gpu" for device in jax.devices())


def main(argv):
    import keras

    import keras_mae
    from keras_mae import callbacks, data, optimizers, runs
    from keras_mae.distribution import data_shard, setup_distribution, takes_uint8_batches

    config = common.model_config(FLAGS)
    check_flags(config)
    keras.config.set_dtype_policy(FLAGS.dtype_policy)
    keras.utils.set_random_seed(FLAGS.seed)
    scope, replicas = setup_distribution(FLAGS.distribution)
    if FLAGS.batch_size % replicas:
        raise common.UserError(f"--batch_size={FLAGS.batch_size} (global) must be divisible by the {replicas} replicas.")
    with scope():
        model = keras_mae.MaskedAutoencoder(**config, seed=FLAGS.seed, eval_mask_seed=FLAGS.seed)  # validates sizes
    # A checkpoint is float32 weights and two AdamW moments; --keep_checkpoints of them stay while the next is
    # written; the exports are model.keras (with its optimizer) and the encoder twice (.keras, .weights.h5).
    checkpoint = 3 * 4 * model.count_params()
    kept = FLAGS.keep_checkpoints + bool(FLAGS.checkpoint_every_steps)  # + the newest mid-epoch one
    common.check_workdir(FLAGS.workdir, (kept + 1) * checkpoint + checkpoint + 2 * 4 * model.encoder.count_params(),
                         f"the run ({kept} kept checkpoints, the one being written and the exports)")
    resuming = recipe.check_same_run(FLAGS.workdir, common.ARCHITECTURE_FLAGS)

    split = common.split_data(FLAGS, FLAGS.dataset, model.num_channels, FLAGS.workdir)
    source = split.train
    if resuming and runs.is_workdir(FLAGS.workdir):  # keeps the normalisation its checkpoints were trained with
        recorded = runs.read_run(FLAGS.workdir)
        source.mean, source.std = tuple(recorded["mean"]), tuple(recorded["std"])
    # The training batches are uint8 pixels (a quarter of the bytes, and the host spared the float work), which the
    # model normalises in its step with these; its saved config records them. Under multi-worker / TPU tf.distribute
    # they stay float32 (normalised on the host): Keras's first-batch collective there takes no uint8.
    model.mean, model.std = source.mean, source.std
    with scope():
        pixels = takes_uint8_batches()
    steps = recipe.steps_per_epoch(source.num_examples, FLAGS.dataset)

    with scope():
        model.compile(
            optimizer=optimizers.make_pretrain_optimizer(model, recipe.schedule(steps), FLAGS.weight_decay,
                                                         **recipe.accumulation_options()),
            **recipe.compile_options(),
        )

    workdir = FLAGS.workdir
    with scope():  # restoring builds the optimizer's variables: on every replica under tf.distribute
        initial = recipe.resume(model, workdir)

    def train(epoch, step):
        # Epoch e's order and crops depend on (seed, e) only: a resumed run sees the batches of an uninterrupted one.
        return data.make_pretrain_dataset(source, model.image_size, FLAGS.batch_size, seed=FLAGS.seed,
                                          steps_per_epoch=steps, initial_epoch=epoch, initial_step=step,
                                          shard=data_shard(),  # this process's rows of each global batch
                                          normalize=not pixels)

    recipe.write_flags(workdir)
    if common.chief():
        runs.write_run(workdir, model, split.record, source.mean, source.std)

    # The figure's images: evaluation images (never trained on), one class after another.
    figure_source = data.fixed_subset(split.eval or source, FLAGS.num_reconstructions, FLAGS.seed, balanced=True)
    shown = next(iter(data.make_eval_dataset(figure_source, model.image_size, FLAGS.num_reconstructions,
                                             with_labels=False, mean=source.mean, std=source.std)))
    validation, validation_info = validation_data(split, model, replicas)
    chief = common.chief()  # every process computes the figures; process 0 writes them
    reconstructions = callbacks.ReconstructionSummary(
        keras.ops.convert_to_numpy(shown), source.mean, source.std,
        os.path.join(workdir, "tensorboard", "images") if chief else None,
        os.path.join(workdir, "reconstructions") if chief else None, FLAGS.reconstruction_every, seed=FLAGS.seed,
    )
    # The kNN monitor goes before the log, so knn_top1 reaches log.jsonl.
    recipe.fit(model, train, workdir, initial, steps, validation, FLAGS.eval_every, validation_info,
               monitors=knn_monitor(split, model, workdir), summaries=[reconstructions])
    save_final(model, workdir, reconstructions)


def validation_data(split, model, replicas):
    """The fixed evaluation images of the per-epoch validation loss (masks fixed by the model's eval_mask_seed)."""
    from keras_mae import data
    from keras_mae.distribution import data_shard

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
                                     mean=split.train.mean, std=split.train.std, shard=data_shard())
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
                                 log_dir=os.path.join(workdir, "tensorboard", "knn") if common.chief() else None)]


def save_final(model, workdir, reconstructions):
    from keras_mae import runs
    from keras_mae.distribution import reads_are_collective

    if not common.chief():
        if reads_are_collective():  # multi-process JAX: every process reads the variables with process 0
            with tempfile.TemporaryDirectory() as scratch:
                runs.save_exports(model, scratch)
        return
    runs.save_exports(model, workdir)
    print(f"\nModel:            {os.path.join(workdir, 'model.keras')}")
    print(f"Encoder:          {os.path.join(workdir, 'encoder.keras')} (weights: encoder.weights.h5)")
    print(f"Checkpoints:      {os.path.join(workdir, 'checkpoints')}")
    if reconstructions.last_png:
        print(f"Reconstructions:  {reconstructions.last_png}")
    print(f"TensorBoard:      tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")


if __name__ == "__main__":
    app.run(common.run_main(main))
