"""Linear probing of a frozen pretrained encoder, as facebookresearch/mae `main_linprobe.py`.

    KERAS_BACKEND=jax python apps/linear_probe.py --flagfile=apps/configs/linprobe_fashion_mnist.flags \
        --encoder=runs/fashion_mnist --workdir=runs/fashion_mnist/linear_probe --cache_features --compare_random_init

Head: BatchNorm (no affine) + Linear, on the CLS token (or mean-pooled) features; LARS, lr = base_lr * batch / 256,
warmup then cosine. --cache_features computes the frozen features once (no augmentation) and trains the head on
them; otherwise each step augments (random resized crop + flip) and runs the frozen encoder.
--compare_random_init probes a randomly initialised encoder of the same config too. Top-1 / top-5 go to
workdir/linear_probe.json. Rerunning resumes from the last checkpoint.
"""

import json
import os

from absl import app, flags

import common
import downstream

flags.DEFINE_string("encoder", None, downstream.ENCODER_HELP, required=True)
flags.DEFINE_string("preset", None, "Architecture of an --encoder=*.weights.h5 file.")
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go; defaults to <encoder workdir>/linear_probe.")
flags.DEFINE_string("dataset", None, "Labelled dataset (as pretrain.py's --dataset); defaults to the pretraining's.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_string("train_split", "train", "Split the head is trained on.")
flags.DEFINE_string("eval_split", "test", "Split evaluated (ImageNet: validation).")
flags.DEFINE_enum("pool", "cls", ["cls", "mean"], "Features: the CLS token, or the mean of patch tokens (official --global_pool).")
flags.DEFINE_integer("epochs", 90, "Training epochs.")
flags.DEFINE_integer("warmup_epochs", 10, "Linear warm-up epochs.")
flags.DEFINE_integer("batch_size", 16384, "Images per step (the paper's 16384).")
flags.DEFINE_float("base_lr", 0.1, "Learning rate = base_lr * batch_size / 256.")
flags.DEFINE_float("lr", None, "Absolute peak learning rate; overrides base_lr.")
flags.DEFINE_float("min_lr", 0.0, "Learning rate at the end of the cosine.")
flags.DEFINE_float("weight_decay", 0.0, "LARS weight decay (the paper uses none).")
flags.DEFINE_boolean("cache_features", False, "Extract the frozen features once (no augmentation) and train on them.")
flags.DEFINE_boolean("compare_random_init", False, "Also probe a randomly initialised encoder of the same config.")
flags.DEFINE_integer("features_batch_size", 512, "Images per forward pass when extracting features.")
flags.DEFINE_integer("eval_every", 0, "Epochs between evaluations during training without --cache_features (0: at the end).")
flags.DEFINE_integer("steps_per_epoch", None, "Cap steps per epoch (smoke runs).")
flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation, head and random-init encoder.")
flags.DEFINE_integer("checkpoint_every", 1, "Epochs between checkpoints.")
flags.DEFINE_integer("keep_checkpoints", 2, "Complete checkpoints kept.")
flags.DEFINE_integer("verbose", 2, "Keras progress output: 0 silent, 1 bar, 2 one line per epoch.")
FLAGS = flags.FLAGS

RUN_FLAGS = ["encoder", "preset", "workdir", "dataset", "data_dir", "train_split", "eval_split", "pool", "epochs",
             "warmup_epochs", "batch_size", "base_lr", "lr", "min_lr", "weight_decay", "cache_features",
             "compare_random_init", "features_batch_size", "eval_every", "steps_per_epoch", "seed",
             "checkpoint_every", "keep_checkpoints"]


def check_flags():
    for name in ("epochs", "batch_size", "features_batch_size", "checkpoint_every", "keep_checkpoints"):
        if getattr(FLAGS, name) < 1:
            raise common.UserError(f"--{name} must be at least 1. Received: --{name}={getattr(FLAGS, name)}")
    if not 0 <= FLAGS.warmup_epochs < FLAGS.epochs:
        raise common.UserError(f"--warmup_epochs must be in [0, epochs={FLAGS.epochs}). Received: {FLAGS.warmup_epochs}")


def probe(encoder, name, workdir, data, key):
    """Trains a LinearProbe on `encoder` in `workdir`; returns its eval metrics."""
    import keras

    from keras_mae import callbacks, optimizers
    from keras_mae.models.linear_probe import LinearProbe
    from keras_mae.utils.atomic import atomic_path

    key = json.dumps({**key, "pool": FLAGS.pool, "train_split": FLAGS.train_split, "eval_split": FLAGS.eval_split,
                      "cache_features": FLAGS.cache_features}, sort_keys=True)
    downstream.forget_other_runs(workdir, key)
    keras.utils.set_random_seed(FLAGS.seed)
    model = LinearProbe(encoder, data["num_classes"], FLAGS.pool, name=name)
    if FLAGS.cache_features:
        train, evaluation, steps = cached_data(model, data, workdir, key)
        trained = model.head_model()
    else:
        train, evaluation, steps = data["train"], data["eval"], data["steps"]
        trained = model
    peak_lr = FLAGS.lr if FLAGS.lr is not None else FLAGS.base_lr * FLAGS.batch_size / 256
    schedule = optimizers.WarmupCosineDecay(peak_lr, FLAGS.warmup_epochs * steps, FLAGS.epochs * steps, FLAGS.min_lr)
    trained.compile(
        optimizer=optimizers.LARS(schedule, weight_decay=FLAGS.weight_decay, momentum=0.9, trust_coefficient=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, data["num_classes"]), name="top5")],
    )
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    initial_epoch = callbacks.restore_latest(trained, checkpoint_dir)
    if initial_epoch:
        print(f"Resuming {name} from epoch {initial_epoch} in {checkpoint_dir}")
    every = 1 if FLAGS.cache_features else FLAGS.eval_every
    if initial_epoch < FLAGS.epochs:
        common.training_started()
        trained.fit(
            train, epochs=FLAGS.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
            validation_data=evaluation if every else None, validation_freq=max(every, 1), shuffle=False,
            verbose=FLAGS.verbose,
            callbacks=[
                callbacks.TrainingLog(FLAGS.batch_size, os.path.join(workdir, "log.jsonl")),
                callbacks.EpochCheckpoint(checkpoint_dir, FLAGS.checkpoint_every, FLAGS.keep_checkpoints),
                keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"), write_graph=False),
            ],
        )
    results = trained.evaluate(evaluation, verbose=0, return_dict=True)
    with atomic_path(os.path.join(workdir, "probe.keras")) as tmp:
        model.save(tmp)
    return {metric: float(value) for metric, value in results.items()}


def cached_data(model, data, workdir, key):
    """Frozen features of the train and eval splits as batched tf.data: extracted once, kept in workdir/features.npz."""
    import time

    import numpy as np
    import tensorflow as tf

    from keras_mae.utils.atomic import atomic_path

    path = os.path.join(workdir, "features.npz")
    cached = None
    if os.path.isfile(path):
        with np.load(path) as f:
            cached = {name: f[name] for name in f.files} if str(f["key"]) == key else None
    if cached is None:
        start = time.perf_counter()
        train_x, train_y = model.extract_features(data["train_plain"], verbose=FLAGS.verbose)
        eval_x, eval_y = model.extract_features(data["eval"], verbose=FLAGS.verbose)
        print(f"Features of {len(train_y)} + {len(eval_y)} images in {time.perf_counter() - start:.0f} s -> {path}")
        cached = dict(train_x=train_x, train_y=train_y, eval_x=eval_x, eval_y=eval_y, key=np.array(key))
        with atomic_path(path) as tmp:
            np.savez(tmp, **cached)
    else:
        print(f"Features of {len(cached['train_y'])} + {len(cached['eval_y'])} images from {path}")
    train_x, train_y = cached["train_x"], cached["train_y"]
    steps = len(train_y) // FLAGS.batch_size
    if FLAGS.steps_per_epoch:
        steps = min(steps, FLAGS.steps_per_epoch)
    if steps < 1:
        raise common.UserError(f"{len(train_y)} training images are fewer than --batch_size={FLAGS.batch_size}; lower it.")
    train = (tf.data.Dataset.from_tensor_slices((train_x, train_y))
             .shuffle(len(train_y), seed=FLAGS.seed, reshuffle_each_iteration=True)
             .batch(FLAGS.batch_size, drop_remainder=True).repeat().prefetch(2))
    evaluation = tf.data.Dataset.from_tensor_slices((cached["eval_x"], cached["eval_y"])).batch(4096)
    return train, evaluation, steps


def load_data(encoder, info):
    from keras_mae import data
    from keras_mae.data.classification import make_classification_dataset

    size = encoder.image_size
    dataset, source, eval_source, (mean, std), steps = downstream.labelled_sources(
        FLAGS, info, encoder.num_channels, "Linear probing")
    if steps < 1 and not FLAGS.cache_features:
        raise common.UserError(f"{dataset!r} has fewer than --batch_size={FLAGS.batch_size} images; lower --batch_size.")
    plain = dict(image_size=size, batch_size=FLAGS.features_batch_size, mean=mean, std=std)
    return {
        "name": dataset if isinstance(dataset, str) else "data",
        "num_classes": max(source.num_classes, eval_source.num_classes),
        "num_eval": eval_source.num_examples,
        "mean": list(mean),
        "steps": steps,
        "train": None if FLAGS.cache_features else make_classification_dataset(
            source, size, FLAGS.batch_size, seed=FLAGS.seed, mean=mean, std=std).repeat(),
        "train_plain": data.make_eval_dataset(source, **plain) if FLAGS.cache_features else None,
        "eval": data.make_eval_dataset(eval_source, **plain),
    }


def main(argv):
    check_flags()
    encoder, info = downstream.load_encoder(FLAGS.encoder, FLAGS.preset)
    workdir = FLAGS.workdir
    if workdir is None:
        if not os.path.isfile(os.path.join(FLAGS.encoder, "run.json")):
            raise common.UserError("Pass --workdir (where the probe's checkpoints and results go).")
        workdir = os.path.join(FLAGS.encoder, "linear_probe")
    if os.path.isfile(os.path.join(workdir, "run.json")):
        raise common.UserError(f"--workdir {workdir!r} is a pretraining workdir; pass another, e.g. {workdir}/linear_probe.")
    common.check_workdir(workdir)
    common.write_flags(FLAGS, os.path.join(workdir, "flags.txt"), RUN_FLAGS)
    print(f"Encoder:          {info['source']} ({encoder.num_layers} blocks, width {encoder.hidden_dim})")
    data = load_data(encoder, info)

    key = {"dataset": data["name"], "mean": data["mean"]}
    runs = {"pretrained": probe(encoder, "probe", workdir, data,
                                {**key, "encoder": info["source"], "modified": info.get("modified")})}
    if FLAGS.compare_random_init:
        random_workdir = os.path.join(workdir, "random_init")
        common.check_workdir(random_workdir)
        random_encoder = downstream.random_encoder_like(encoder, FLAGS.seed)
        runs["random_init"] = probe(random_encoder, "random_probe", random_workdir, data,
                                    {**key, "encoder": random_encoder.get_config(), "seed": FLAGS.seed})

    num_eval = data["num_eval"]
    columns = " | ".join(f"{name.replace('_', ' ')} {100 * result['top1']:.1f}%" for name, result in runs.items())
    print(f"\nLinear probe top-1 on {data['name']} {FLAGS.eval_split} ({num_eval} images): {columns}")
    downstream.write_json(os.path.join(workdir, "linear_probe.json"), {
        "encoder": info["source"], "dataset": data["name"], "eval_split": FLAGS.eval_split, "num_eval": num_eval,
        "pool": FLAGS.pool, "cache_features": FLAGS.cache_features, "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size, **runs,
    })


if __name__ == "__main__":
    app.run(common.run_main(main))
