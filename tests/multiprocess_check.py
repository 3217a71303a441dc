"""Run in each process of a job (or alone, distribution "none"): pretrains a tiny MAE for a few steps on a
fixed global batch; the chief writes the final loss and weights to OUT/result.json / OUT/weights.npz.

    python tests/multiprocess_check.py none OUT
    torchrun --standalone --nproc_per_node=2 tests/multiprocess_check.py ddp OUT
    (jax) KERAS_DISTRIBUTION_JOB_ADDRESSES=... _NUM_PROCESSES=2 _PROCESS_ID=i python ... data_parallel OUT
    (tensorflow) TF_CONFIG=... python ... multi_worker_mirrored OUT
"""

import json
import os
import sys

import keras
import numpy as np

import keras_mae
from keras_mae import data
from keras_mae.distribution import data_shard, is_chief, setup_distribution

BATCH, STEPS = 8, 3


def tiny_mae(name, **overrides):
    """Sets up distribution `name` and builds and compiles the tiny seeded MAE of the distribution checks in its
    scope: `(model, replicas)`."""
    scope, replicas = setup_distribution(name)
    with scope():
        keras.utils.set_random_seed(0)
        model = keras_mae.MaskedAutoencoder(
            image_size=8, patch_size=4, num_channels=3, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32,
            decoder_hidden_dim=8, decoder_num_layers=1, decoder_num_heads=2, decoder_mlp_dim=16, norm_pix_loss=True,
            seed=0, **overrides)
        model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    return model, replicas


def main(name, out):
    model, replicas = tiny_mae(name, eval_mask_seed=1)
    images = (np.random.default_rng(1).uniform(size=(4 * BATCH, 10, 10, 3)) * 255).astype("uint8")
    train = data.make_pretrain_dataset(images, 8, BATCH, seed=0, steps_per_epoch=STEPS, shard=data_shard())
    source = data.load_source(images[:2 * BATCH])
    validation = data.make_eval_dataset(source, 8, BATCH, with_labels=False, shard=data_shard())
    history = model.fit(train, epochs=2, steps_per_epoch=STEPS, validation_data=validation, verbose=0)
    evaluation = model.evaluate(validation, verbose=0, return_dict=True)
    if is_chief():
        weights = {f"w{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.trainable_variables)}
        np.savez(os.path.join(out, "weights.npz"), **weights)
        with open(os.path.join(out, "result.json"), "w") as file:
            json.dump({"replicas": replicas, "loss": history.history["loss"], "val_loss": history.history["val_loss"],
                       "eval_loss": evaluation["loss"],
                       "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations))}, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
