"""Multi-device training on each backend's own engine: the only place that knows them apart.

- jax: `keras.distribution.DataParallel` over all devices (multi-host after
  `keras.distribution.initialize()`, which reads the JAX coordinator settings).
- tensorflow: `tf.distribute.MirroredStrategy`, `MultiWorkerMirroredStrategy`
  (reads TF_CONFIG) or `TPUStrategy`; build and compile the model in `scope`.
- torch: Keras's `fit` has no DistributedDataParallel support, so `ddp` is a
  clear error rather than a home-made engine.

In every case the batch size given to the data pipeline is the global batch;
the engines split it over replicas, and the MAE train step divides the loss
by the replica count where gradients are summed (tf.distribute).
"""

import contextlib
import json
import os

import keras

STRATEGIES = {
    "none": None,
    "data_parallel": "jax",
    "mirrored": "tensorflow",
    "multi_worker_mirrored": "tensorflow",
    "tpu": "tensorflow",
    "ddp": "torch",
}


def setup_distribution(name="none"):
    """Sets up `name` on the current backend.

    Args:
        name: str. One of `STRATEGIES`.

    Returns:
        `(scope, num_replicas)`: a function returning a context manager to
        build and compile the model in (`with scope(): ...`, as often as
        needed), and the number of replicas sharing each global batch.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown distribution {name!r}; choose one of {', '.join(STRATEGIES)}.")
    backend = keras.backend.backend()
    needed = STRATEGIES[name]
    if name == "ddp":
        raise ValueError(
            f"distribution='ddp' is not supported: Keras {keras.__version__}'s fit has no PyTorch DDP support; "
            "use distribution='data_parallel' with KERAS_BACKEND=jax, or 'mirrored'/'multi_worker_mirrored'/'tpu' "
            "with KERAS_BACKEND=tensorflow."
        )
    if needed is not None and needed != backend:
        raise ValueError(f"distribution={name!r} needs KERAS_BACKEND={needed}; this process runs {backend}.")
    if name == "none":
        return contextlib.nullcontext, 1
    if name == "data_parallel":
        if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
            keras.distribution.initialize()
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext, len(devices)
    import tensorflow as tf

    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif name == "multi_worker_mirrored":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    return strategy.scope, strategy.num_replicas_in_sync


def is_chief():
    """True in process 0 of a multi-process job, and in a single process: the one that writes the workdir.

    Read from the launchers' environment, so it can be asked before any backend is set up: torchrun's
    `RANK`, `JAX_PROCESS_ID`, and `TF_CONFIG` (its chief, else worker 0).

    >>> is_chief()  # a plain process
    True
    """
    for variable in ("RANK", "JAX_PROCESS_ID"):
        if os.environ.get(variable, "0") not in ("", "0"):
            return False
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except ValueError:
        return True
    kind = task.get("type", "worker")
    return kind == "chief" or (kind == "worker" and not task.get("index"))
