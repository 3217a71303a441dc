"""Linear (or MLP) probing of a frozen pretrained encoder, as facebookresearch/mae `main_linprobe.py`.

    KERAS_BACKEND=jax python apps/linear_probe.py --flagfile=apps/configs/linprobe_fashion_mnist.flags \
        --encoder=runs/fashion_mnist --workdir=runs/fashion_mnist/linear_probe --cache_features --compare_random_init

Head: BatchNorm (no affine) + Linear, on the CLS token (or mean-pooled) features; LARS, lr = base_lr * batch / 256,
warmup then cosine. --cache_features computes the frozen features once (no augmentation) and trains the head on
them; otherwise each step augments (random resized crop + flip) and runs the frozen encoder.
--head=mlp puts hidden layers (AdamW) between the BatchNorm and the Linear. --compare_random_init probes a randomly
initialised encoder of the same config too. Evaluation images are held out (see keras_mae.data.splits); top-1 / top-5
on them go to workdir/linear_probe.json, and the full report to workdir/report/. Rerunning resumes.
"""

import json
import os

from absl import app, flags

if __name__ == "__main__":  # before Keras loads: glibc reads the setting only at process start (huge_pages.py)
    import huge_pages

    huge_pages.restart_with_huge_pages()

import common  # noqa: E402
import downstream  # noqa: E402
import probe_heads  # noqa: E402
import recipe  # noqa: E402
import reporting  # noqa: E402

flags.DEFINE_string("encoder", None, downstream.ENCODER_HELP, required=True)
flags.DEFINE_string("preset", None, "Architecture of an --encoder=*.weights.h5 file.")
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go; defaults to <encoder workdir>/linear_probe.")
common.define_data_flags()
flags.DEFINE_enum("pool", "cls", ["cls", "mean"], "Features: the CLS token, or the mean of patch tokens (official --global_pool).")
recipe.define_training_flags(
    epochs=90, warmup_epochs=10, batch_size=16384, base_lr=0.1, weight_decay=0.0,
    seed_help="Seed of data order, augmentation, head, held-out split and random-init encoder.",
    base_lr_help="Linear head: LARS learning rate = base_lr * batch_size / 256.",
    weight_decay_help="Linear head: LARS weight decay (the paper uses none).")
recipe.define_resume_flags()
flags.DEFINE_boolean("cache_features", False, "Extract the frozen features once (no augmentation) and train on them.")
flags.DEFINE_boolean("compare_random_init", False, "Also probe a randomly initialised encoder of the same config.")
flags.DEFINE_integer("features_batch_size", 512, "Images per forward pass when extracting features.")
flags.DEFINE_enum("features_dtype_policy", "auto", ["auto", "float32", "mixed_bfloat16"],
                  "--cache_features: precision of the frozen encoder's forward pass. auto: mixed_bfloat16 on torch on a "
                  "CPU with bf16 instructions (measured 2-3x faster) and on GPUs, else float32.")
flags.DEFINE_integer("eval_every", 0, "Epochs between evaluations during training without --cache_features (0: at the end).")
flags.DEFINE_boolean("report", True, "End with the evaluation report of the trained probe (workdir/report/).")
common.define_report_flags()
common.define_distribution_flag()
FLAGS = flags.FLAGS


def probe(encoder, name, workdir, data, key):
    """Trains the --head probe on `encoder` in `workdir`; writes its model, record and report; returns its metrics."""
    import keras

    from keras_mae.evaluation import predict_probabilities
    from keras_mae.evaluation.predict import softmax

    key = {**key, "pool": FLAGS.pool, "split": data["split"].record, "cache_features": FLAGS.cache_features,
           **{flag: getattr(FLAGS, flag) for flag in probe_heads.HEAD_FLAGS}}
    if FLAGS.cache_features:
        key["features_dtype_policy"] = data["features_dtype_policy"]
    key = json.dumps(key, sort_keys=True)
    downstream.forget_other_runs(workdir, key)
    keras.utils.set_random_seed(FLAGS.seed)
    model = probe_heads.build(encoder, data["num_classes"], name)
    if FLAGS.cache_features:
        train, evaluation, steps, cached_eval = probe_heads.cached_data(model, data, workdir, key)
        trained = model.head_model()
    else:
        train, evaluation, steps = data["train"], data["eval"], data["steps"]
        trained = model
    trained.compile(
        optimizer=probe_heads.optimizer(steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, data["num_classes"]), name="top5")],
    )
    initial = recipe.resume(trained, workdir, name)
    every = 1 if FLAGS.cache_features else FLAGS.eval_every
    recipe.fit(trained, train, workdir, initial, steps, evaluation if every else None, every,
               {"val_split": data["split"].eval_name, "val_images": data["split"].eval.num_examples})
    results = downstream.evaluate(trained, evaluation)
    recipe.save(model, os.path.join(workdir, "probe.keras"))
    split, (mean, std) = data["split"], data["statistics"]
    names = reporting.class_names(split, data["num_classes"])
    reporting.write_classifier_record(workdir, "probe.keras", split, mean, std, names)
    if FLAGS.report:
        if FLAGS.cache_features:
            labels, files = cached_eval["y"], cached_eval["files"]
            probabilities = softmax(trained.predict(cached_eval["x"], batch_size=4096, verbose=0))
        else:
            labels, probabilities, files = predict_probabilities(model, split.eval, encoder.image_size,
                                                                 FLAGS.features_batch_size, mean, std)
        reporting.write(FLAGS, os.path.join(workdir, "report"), labels, probabilities, files, split, names,
                        tensorboard_dir=os.path.join(workdir, "tensorboard"), model=f"{name} ({FLAGS.head} head)",
                        dataset=data["name"])
    return results


def load_data(encoder, info, workdir):
    from keras_mae import data
    from keras_mae.data.classification import make_classification_dataset
    from keras_mae.distribution import data_shard
    from keras_mae.evaluation.predict import with_ids as ids_of

    size = encoder.image_size
    dataset, split, (mean, std), steps = downstream.labelled_split(
        FLAGS, info, encoder.num_channels, "Linear probing", workdir)
    if steps < 1 and not FLAGS.cache_features:
        raise common.UserError(f"{dataset!r} has fewer than --batch_size={FLAGS.batch_size} training images; "
                               "lower --batch_size.")
    plain = dict(image_size=size, batch_size=FLAGS.features_batch_size, mean=mean, std=std)
    with_ids, resolve_ids = ids_of(split.eval)
    return {
        "name": dataset,
        "split": split,
        "statistics": (mean, std),
        "eval_with_ids": data.make_eval_dataset(with_ids, **plain) if FLAGS.cache_features else None,
        "resolve_ids": resolve_ids,
        "num_classes": max(split.train.num_classes, split.eval.num_classes),
        "features_dtype_policy": features_dtype_policy() if FLAGS.cache_features else None,
        "mean": list(mean),
        "steps": steps,
        "train": None if FLAGS.cache_features else make_classification_dataset(
            split.train, size, FLAGS.batch_size, seed=FLAGS.seed, mean=mean, std=std, shard=data_shard()).repeat(),
        "train_plain": data.make_eval_dataset(split.train, **plain) if FLAGS.cache_features else None,
        "eval": data.make_eval_dataset(split.eval, **plain, shard=data_shard()),
    }


def features_dtype_policy():
    """--features_dtype_policy, with auto resolved for this backend and machine."""
    from keras_mae.utils.bfloat16 import fast_inference_policy

    return fast_inference_policy() if FLAGS.features_dtype_policy == "auto" else FLAGS.features_dtype_policy


def main(argv):
    recipe.check_training_flags("features_batch_size")
    if FLAGS.cache_features and FLAGS.distribution != "none":
        raise common.UserError("--cache_features trains the head on features extracted in one process (seconds per "
                               "epoch); drop --distribution, or drop --cache_features to train on augmented images.")
    scope, _ = downstream.setup_distribution(FLAGS)
    with scope():  # builds and compiles on every replica (tf.distribute); a no-op elsewhere
        linear_probe()


def linear_probe():
    encoder, info = downstream.load_encoder(FLAGS.encoder, FLAGS.preset)
    workdir = downstream.prepare_workdir(FLAGS.workdir, FLAGS.encoder, "linear_probe",
                                         "the probe's checkpoints and results", model_flags=("preset",),
                                         restart_flags=("pool", "cache_features", *probe_heads.HEAD_FLAGS))
    print(f"Encoder:          {info['source']} ({encoder.num_layers} blocks, width {encoder.hidden_dim})")
    data = load_data(encoder, info, workdir)

    key = {"dataset": data["name"], "mean": data["mean"]}
    runs = {"pretrained": probe(encoder, "probe", workdir, data,
                                {**key, "encoder": info["source"], "modified": info.get("modified")})}
    if FLAGS.compare_random_init:
        random_workdir = os.path.join(workdir, "random_init")
        common.check_workdir(random_workdir)
        from keras_mae.data import save_split

        if common.chief():
            save_split(data["split"], random_workdir)  # so that evaluate.py finds the same evaluation images there
        random_encoder = downstream.random_encoder_like(encoder, FLAGS.seed)
        runs["random_init"] = probe(random_encoder, "random_probe", random_workdir, data,
                                    {**key, "encoder": random_encoder.get_config(), "seed": FLAGS.seed})

    split = data["split"]
    columns = " | ".join(f"{name.replace('_', ' ')} {100 * result['top1']:.1f}%" for name, result in runs.items())
    kind = "Linear" if FLAGS.head == "linear" else "MLP"
    print(f"\n{kind} probe top-1 on {data['name']} {downstream.metric_scope(split)}: {columns}")
    downstream.write_json(os.path.join(workdir, "linear_probe.json"), {
        "encoder": info["source"], "dataset": data["name"], "eval_split": split.eval_name,
        "num_eval": split.eval.num_examples, "num_train": split.train.num_examples, "split": split.how,
        "head": FLAGS.head, "pool": FLAGS.pool, "cache_features": FLAGS.cache_features,
        "features_dtype_policy": data["features_dtype_policy"], "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size, **runs,
    })


if __name__ == "__main__":
    app.run(common.run_main(main))
