"""End-to-end fine-tuning of a pretrained encoder, as facebookresearch/mae `main_finetune.py`.

    KERAS_BACKEND=jax python apps/finetune.py --flagfile=apps/configs/finetune_fashion_mnist.flags \
        --encoder=runs/fashion_mnist --workdir=runs/fashion_mnist/finetune

ViTClassifier (global pool + fc_norm, drop path), AdamW with layer-wise lr decay, lr = base_lr * batch / 256 with
warmup then cosine to min_lr; RandomResizedCrop + flip + RandAugment + random erasing, mixup / cutmix and label
smoothing. Top-1 / top-5 on the eval split go to workdir/finetune.json. Rerunning resumes from the last checkpoint.
"""

import json
import os

from absl import app, flags

if __name__ == "__main__":  # before Keras loads: glibc reads the setting only at process start (huge_pages.py)
    import huge_pages

    huge_pages.restart_with_huge_pages()

import common  # noqa: E402
import downstream  # noqa: E402
import recipe  # noqa: E402
import reporting  # noqa: E402

flags.DEFINE_string("encoder", None, downstream.ENCODER_HELP + " None: train from scratch (--preset).")
flags.DEFINE_string("preset", None, "Architecture of an --encoder=*.weights.h5 file, or of a from-scratch model.")
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and the model go; defaults to <encoder workdir>/finetune.")
common.define_data_flags()
flags.DEFINE_boolean("global_pool", True, "Mean of patch tokens + fc_norm (True) or the CLS token.")
flags.DEFINE_float("drop_path_rate", 0.1, "Stochastic depth (B 0.1, L 0.2, H 0.3).")
recipe.define_training_flags(
    epochs=100, warmup_epochs=5, batch_size=1024, base_lr=1e-3, weight_decay=0.05, min_lr=1e-6,
    accumulation=True, compilation=True, seed_help="Seed of data order, augmentation, head init and drop path.",
    base_lr_help="Learning rate = base_lr * batch_size * accum_steps / 256 (B: 5e-4).",
    weight_decay_help="AdamW weight decay (not on biases, norms, cls_token, pos_embed).")
recipe.define_resume_flags()
flags.DEFINE_float("layer_decay", 0.75, "Layer-wise lr decay (B 0.65, L and H 0.75).")
flags.DEFINE_boolean("rand_augment", True, "RandAugment rand-m9-mstd0.5-inc1.")
flags.DEFINE_float("random_erasing_prob", 0.25, "Random erasing probability (official --reprob).")
flags.DEFINE_float("mixup_alpha", 0.8, "Mixup Beta parameter; 0 disables (official --mixup).")
flags.DEFINE_float("cutmix_alpha", 1.0, "Cutmix Beta parameter; 0 disables (official --cutmix).")
flags.DEFINE_float("switch_prob", 0.5, "Probability of cutmix rather than mixup for a batch.")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing (official --smoothing).")
flags.DEFINE_integer("eval_every", 1, "Epochs between evaluations (0: only at the end).")
flags.DEFINE_integer("eval_batch_size", 256, "Images per evaluation step.")
flags.DEFINE_boolean("report", True, "End with the evaluation report of the final model (workdir/report/).")
common.define_report_flags()
common.define_distribution_flag()
FLAGS = flags.FLAGS



def check_flags():
    recipe.check_training_flags("eval_batch_size")
    if not 0 < FLAGS.layer_decay <= 1:
        raise common.UserError(f"--layer_decay must be in (0, 1]. Received: --layer_decay={FLAGS.layer_decay}")
    if not (FLAGS.encoder or FLAGS.preset):
        raise common.UserError("Pass --encoder (a pretrained encoder) or --preset (to train from scratch).")


def pretrained_encoder():
    """`(encoder or None, info, encoder config)` from --encoder, or --preset for a from-scratch run."""
    from keras_mae.models.presets import ENCODER_KEYS, encoder_config

    if not FLAGS.encoder:
        return None, {"source": f"random init ({FLAGS.preset})"}, encoder_config(FLAGS.preset)
    encoder, info = downstream.load_encoder(FLAGS.encoder, FLAGS.preset)
    config = {key: getattr(encoder, key) for key in ENCODER_KEYS}
    return encoder, info, {**config, "layer_norm_epsilon": encoder.layer_norm_epsilon}


def build_model(pretrained, config, num_classes):
    """The ViTClassifier, its encoder initialised from `pretrained` (weight by weight, by path)."""
    from keras_mae import ViTClassifier
    from keras_mae.utils.copy_weights import copy_weights

    model = ViTClassifier(**config, num_classes=num_classes, global_pool=FLAGS.global_pool,
                          drop_path_rate=FLAGS.drop_path_rate)
    if pretrained is not None:
        copy_weights(pretrained, model.encoder)
    return model


def load_data(config, info, workdir):
    from keras_mae import data
    from keras_mae.data.classification import make_classification_dataset, one_hot_labels
    from keras_mae.distribution import data_shard

    size = config["image_size"]
    dataset, split, (mean, std), steps = downstream.labelled_split(
        FLAGS, info, config["num_channels"], "Fine-tuning", workdir)
    if steps < 1:
        raise common.UserError(f"{dataset!r} has fewer than --batch_size={FLAGS.batch_size} training images; "
                               "lower --batch_size.")
    num_classes = max(split.train.num_classes, split.eval.num_classes)
    train = make_classification_dataset(
        split.train, size, FLAGS.batch_size, seed=FLAGS.seed, mean=mean, std=std, rand_augment=FLAGS.rand_augment,
        random_erasing_prob=FLAGS.random_erasing_prob, num_classes=num_classes, mixup_alpha=FLAGS.mixup_alpha,
        cutmix_alpha=FLAGS.cutmix_alpha, switch_prob=FLAGS.switch_prob, label_smoothing=FLAGS.label_smoothing,
        shard=data_shard(),  # this process's rows of each global batch
    )
    evaluation = one_hot_labels(data.make_eval_dataset(split.eval, size, FLAGS.eval_batch_size, mean=mean, std=std,
                                                       shard=data_shard()), num_classes)
    return {"name": dataset, "split": split, "num_classes": num_classes, "steps": steps, "mean": list(mean),
            "std": list(std), "train": train.repeat(), "eval": evaluation}


def main(argv):
    import keras

    check_flags()
    keras.config.set_dtype_policy(FLAGS.dtype_policy)
    scope, _ = downstream.setup_distribution(FLAGS)
    with scope():  # builds and compiles on every replica (tf.distribute); a no-op elsewhere
        finetune()


def finetune():
    import keras

    from keras_mae.optimizers.finetune_optimizer import make_finetune_optimizer

    workdir = downstream.prepare_workdir(FLAGS.workdir, FLAGS.encoder, "finetune",
                                         "the fine-tuning's checkpoints and model", model_flags=("preset",),
                                         restart_flags=("global_pool",))

    pretrained, info, config = pretrained_encoder()
    data = load_data(config, info, workdir)
    downstream.forget_other_runs(workdir, json.dumps(
        {"encoder": info["source"], "modified": info.get("modified"), "dataset": data["name"],
         "split": data["split"].record, "global_pool": FLAGS.global_pool}, sort_keys=True))
    keras.utils.set_random_seed(FLAGS.seed)
    model = build_model(pretrained, config, data["num_classes"])
    print(f"Encoder:          {info['source']} ({model.num_layers} blocks, width {model.hidden_dim})")

    steps = data["steps"]
    model.compile(
        optimizer=make_finetune_optimizer(model, recipe.schedule(steps), FLAGS.weight_decay, FLAGS.layer_decay,
                                          **recipe.accumulation_options()),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),  # soft (mixed, smoothed) targets
        metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                 keras.metrics.TopKCategoricalAccuracy(min(5, model.num_classes), name="top5")],
        **recipe.compile_options(),
    )
    initial = recipe.resume(model, workdir)
    split = data["split"]
    recipe.fit(model, data["train"], workdir, initial, steps, data["eval"] if FLAGS.eval_every else None,
               FLAGS.eval_every, {"val_split": split.eval_name, "val_images": split.eval.num_examples})
    results = downstream.evaluate(model, data["eval"])
    recipe.save(model, os.path.join(workdir, "classifier.keras"))
    names = reporting.class_names(split, data["num_classes"])
    reporting.write_classifier_record(workdir, "classifier.keras", split, data["mean"], data["std"], names)
    if FLAGS.report:
        from keras_mae.evaluation import predict_probabilities

        labels, probabilities, files = predict_probabilities(model, split.eval, model.image_size,
                                                             FLAGS.eval_batch_size, data["mean"], data["std"])
        reporting.write(FLAGS, os.path.join(workdir, "report"), labels, probabilities, files, split, names,
                        tensorboard_dir=os.path.join(workdir, "tensorboard"), model="classifier.keras",
                        dataset=data["name"])
    print(f"\nFine-tune top-1 on {data['name']} {downstream.metric_scope(split)}: "
          f"{100 * results['top1']:.1f}% (top-5 {100 * results['top5']:.1f}%)")
    print(f"Classifier:       {os.path.join(workdir, 'classifier.keras')}")
    downstream.write_json(os.path.join(workdir, "finetune.json"), {
        "encoder": info["source"], "dataset": data["name"], "eval_split": split.eval_name,
        "num_eval": split.eval.num_examples, "num_train": split.train.num_examples, "split": split.how,
        "epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size, **results,
    })


if __name__ == "__main__":
    app.run(common.run_main(main))
