"""The heads linear_probe.py trains on a frozen encoder, their optimizers, and the cached features they train on."""

import os
import time

from absl import flags

import common
import recipe

flags.DEFINE_enum("head", "linear", ["linear", "mlp"], "linear: BatchNorm + Linear trained with LARS (the official "
                  "probe); mlp: BatchNorm + hidden layers + Linear trained with AdamW.")
flags.DEFINE_list("head_hidden_dims", ["1024"], "--head=mlp: width of each hidden layer.")
flags.DEFINE_float("head_dropout", 0.1, "--head=mlp: dropout after each hidden layer.")
flags.DEFINE_float("mlp_base_lr", 1e-4, "--head=mlp: AdamW learning rate = mlp_base_lr * batch_size / 256.")
flags.DEFINE_float("mlp_weight_decay", 0.05, "--head=mlp: AdamW weight decay (not on biases).")
FLAGS = flags.FLAGS

HEAD_FLAGS = ["head", "head_hidden_dims", "head_dropout", "mlp_base_lr", "mlp_weight_decay"]


def hidden_dims():
    try:
        dims = [int(d) for d in FLAGS.head_hidden_dims]
    except ValueError:
        dims = []
    if not dims or min(dims) < 1:
        raise common.UserError(f"--head_hidden_dims must be positive ints. Received: {','.join(FLAGS.head_hidden_dims)}")
    return dims


def build(encoder, num_classes, name):
    """The probe of --head on the frozen `encoder`."""
    from keras_mae.models import LinearProbe, MLPProbe

    if FLAGS.head == "linear":
        return LinearProbe(encoder, num_classes, FLAGS.pool, name=name)
    if not 0 <= FLAGS.head_dropout < 1:
        raise common.UserError(f"--head_dropout must be in [0, 1). Received: --head_dropout={FLAGS.head_dropout}")
    return MLPProbe(encoder, num_classes, FLAGS.pool, hidden_dims(), FLAGS.head_dropout, name=name)


def optimizer(steps):
    """LARS (official linear probe) or AdamW (MLP head), warm-up then cosine, per step."""
    import keras

    from keras_mae import optimizers

    schedule = recipe.schedule(steps, FLAGS.base_lr if FLAGS.head == "linear" else FLAGS.mlp_base_lr)
    if FLAGS.head == "linear":
        return optimizers.LARS(schedule, weight_decay=FLAGS.weight_decay, momentum=0.9, trust_coefficient=1e-3)
    adamw = keras.optimizers.AdamW(schedule, weight_decay=FLAGS.mlp_weight_decay)
    adamw.exclude_from_weight_decay(var_names=["bias"])
    return adamw


def cached_data(model, data, workdir, key):
    """Frozen features as batched tf.data, extracted once and kept in workdir/features.npz.

    Returns:
        `(train dataset, eval dataset, steps, eval)`: `eval` holds the evaluation features `x`, true
        labels `y` and `files` (None for a stream), one per image in the same order.
    """
    import numpy as np
    import tensorflow as tf

    from keras_mae.data import without_autotune
    from keras_mae.utils.atomic import atomic_path

    path = os.path.join(workdir, "features.npz")
    cached = None
    if os.path.isfile(path):
        with np.load(path) as f:
            cached = {name: f[name] for name in f.files} if str(f["key"]) == key else None
    if cached is None:
        start = time.perf_counter()
        policy = data["features_dtype_policy"]
        train_x, train_y = model.extract_features(data["train_plain"], verbose=FLAGS.verbose, dtype_policy=policy)
        eval_x, eval_ids = model.extract_features(data["eval_with_ids"], verbose=FLAGS.verbose, dtype_policy=policy)
        print(f"Features of {len(train_y)} + {len(eval_ids)} images ({policy}) in {time.perf_counter() - start:.0f} s "
              f"-> {path}")
        cached = dict(train_x=train_x, train_y=train_y, eval_x=eval_x, eval_ids=eval_ids, key=np.array(key))
        with atomic_path(path) as tmp:
            np.savez(tmp, **cached)
    else:
        print(f"Features of {len(cached['train_y'])} + {len(cached['eval_ids'])} images from {path}")
    train_x, train_y = cached["train_x"], cached["train_y"]
    eval_y, files = data["resolve_ids"](cached["eval_ids"])
    steps = len(train_y) // FLAGS.batch_size
    if FLAGS.steps_per_epoch:
        steps = min(steps, FLAGS.steps_per_epoch)
    if steps < 1:
        raise common.UserError(f"{len(train_y)} training images are fewer than --batch_size={FLAGS.batch_size}; lower it.")
    # In memory, nothing for tf.data to tune; without its tuning thread, the end of `fit` and of each epoch's
    # evaluation waits on nothing (keras_mae/data/autotune.py).
    train = without_autotune(tf.data.Dataset.from_tensor_slices((train_x, train_y))
                             .shuffle(len(train_y), seed=FLAGS.seed, reshuffle_each_iteration=True)
                             .batch(FLAGS.batch_size, drop_remainder=True).repeat().prefetch(2))
    evaluation = tf.data.Dataset.from_tensor_slices((cached["eval_x"], eval_y.astype("int32"))).batch(4096)
    evaluation = without_autotune(evaluation)
    return train, evaluation, steps, {"x": cached["eval_x"], "y": eval_y, "files": files}
