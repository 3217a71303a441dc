"""Multi-device training on each backend's own engine: the only place that knows them apart.

- jax: `keras.distribution.DataParallel` over all devices (multi-host after
  `keras.distribution.initialize()`, which reads the JAX coordinator settings).
- tensorflow: `tf.distribute.MirroredStrategy`, `MultiWorkerMirroredStrategy`
  (reads TF_CONFIG) or `TPUStrategy`; build and compile the model in `scope`.
- torch: `torch.distributed` started by torchrun (`ddp`): Keras's `fit` does
  not know DistributedDataParallel, so `torch_ddp.TorchDataParallel` does its
  work (broadcast, gradient all-reduce, metrics averaged over the ranks).

The batch size is always the global batch. tf.distribute splits each global
batch over its replicas itself; under torch DDP and multi-process JAX each
process reads only its own rows of every global batch (`data_shard()`, the
pipelines' `shard=`), decoding nothing the others read. Masks are drawn for
the global batch and each replica takes its rows (`replica_position()`), so
N replicas train on the masks one process would draw. The MAE train step
divides the loss by the replica count where gradients are summed
(tf.distribute).
"""

import contextlib
import json
import os

import keras

from keras_mae.distribution import torch_ddp
from keras_mae.distribution.torch_ddp import TorchDataParallel  # noqa: F401 (public: for models other than the MAE)

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
    if needed is not None and needed != backend:
        raise ValueError(f"distribution={name!r} needs KERAS_BACKEND={needed}; this process runs {backend}.")
    if name == "none":
        return contextlib.nullcontext, 1
    if name == "ddp":
        from keras_mae.distribution import torch_ddp

        return contextlib.nullcontext, torch_ddp.initialize()
    if name == "data_parallel":
        if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
            keras.distribution.initialize()
        devices = keras.distribution.list_devices()
        # Each process feeds its own rows of the global batch (data_shard), so Keras must not shard again.
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
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


def data_shard():
    """`(index, count)`: this process's share of every global batch, to pass to the pipelines as `shard=`.

    `(rank, world_size)` under torch DDP, `(process_index, process_count)` under multi-process JAX, and
    `(0, 1)` otherwise (one process, or tf.distribute, which splits the global batch itself).
    """
    backend = keras.backend.backend()
    if backend == "torch":
        from keras_mae.distribution import torch_ddp

        return torch_ddp.position()
    if backend == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    return 0, 1


def replica_position():
    """`(index, count)` of the replica running the current step among those sharing the global batch.

    Under tf.distribute the replica context's id (a tensor inside a step); under torch DDP the rank;
    `(0, 1)` on JAX, whose steps are one program over the global batch, and on one device.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        from keras_mae.distribution import torch_ddp

        return torch_ddp.position()
    if backend == "tensorflow":
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return 0, 1
        return context.replica_id_in_sync_group, context.num_replicas_in_sync
    return 0, 1


def takes_uint8_batches(strategy=None):
    """Whether `fit` can take uint8 batches (pixels a model normalises itself) under the current engine.

    Not under tf.distribute's `MultiWorkerMirroredStrategy` or `TPUStrategy`: Keras's TensorFlow trainer averages
    the first batch over the replicas to build the model, with a collective that takes no uint8. Everywhere else
    (one device, `MirroredStrategy`, JAX, torch DDP) it can.

    Args:
        strategy: the `tf.distribute.Strategy` to ask about; None: the current one.
    """
    if keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    return not isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.TPUStrategy))


def callbacks():
    """The callbacks `fit` / `evaluate` need under the current engine: `[TorchDataParallel()]` under torch DDP
    (put them first), else none (the JAX and TensorFlow engines are inside Keras)."""
    return [TorchDataParallel()] if torch_ddp.active() else []


def barrier(name="keras_mae"):
    """Waits until every process of a torch DDP or multi-process JAX job gets here (a no-op elsewhere)."""
    if torch_ddp.active():
        import torch.distributed as dist

        dist.barrier()
    elif reads_are_collective():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def max_over_processes(number):
    """The largest of the processes' ints, on every process, under torch DDP or multi-process JAX; else `number`
    (e.g. the number of a signal that reached only some processes)."""
    if torch_ddp.active():
        return torch_ddp.max_over_ranks(number)
    if reads_are_collective():
        import numpy as np
        from jax.experimental import multihost_utils

        return int(np.max(multihost_utils.process_allgather(np.asarray([int(number)], np.int32))))
    return int(number)


def reads_are_collective():
    """True where reading the model's variables (saving them) is a collective operation every process must
    take part in, in the same order: multi-process JAX. Process 0 writes; the others save to a scratch place."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.process_count() > 1


def is_chief():
    """True in process 0 of a multi-process job, and in a single process: the one that writes the workdir.

    Read from the launchers' environment, so it can be asked before any backend is set up: torchrun's
    `RANK`, `JAX_PROCESS_ID` / `KERAS_DISTRIBUTION_PROCESS_ID`, and `TF_CONFIG` (its chief, else worker 0).

    >>> is_chief()  # a plain process
    True
    """
    for variable in ("RANK", "JAX_PROCESS_ID", "KERAS_DISTRIBUTION_PROCESS_ID"):
        if os.environ.get(variable, "0") not in ("", "0"):
            return False
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except ValueError:
        return True
    kind = task.get("type", "worker")
    return kind == "chief" or (kind == "worker" and not task.get("index"))

