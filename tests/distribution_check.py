"""Run in a subprocess: one train step on 1 device vs on 2 devices, same global batch; prints JSON.

Two devices: XLA_FLAGS=--xla_force_host_platform_device_count=2 (jax) or two
logical CPUs (tensorflow), both set before the backend starts.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from tests.multiprocess_check import tiny_mae  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def one_step(name):
    model, replicas = tiny_mae(name)
    images = np.random.default_rng(1).normal(size=(8, 8, 8, 3)).astype("float32")
    history = model.fit(images, batch_size=8, epochs=1, shuffle=False, verbose=0)
    weights = [ops.convert_to_numpy(v) for v in model.trainable_variables]
    return history.history["loss"][0], weights, replicas


if __name__ == "__main__":
    name = sys.argv[1]
    loss_1, weights_1, _ = one_step("none")
    loss_2, weights_2, replicas = one_step(name)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(weights_1, weights_2))
    moved = max(float(np.abs(a).max()) for a in weights_1)
    print(json.dumps({"loss_1": loss_1, "loss_2": loss_2, "replicas": replicas, "max_weight_diff": diff, "moved": moved}))
