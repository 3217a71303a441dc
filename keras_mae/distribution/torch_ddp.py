"""PyTorch data parallelism (torchrun, torch.distributed) for Keras's `fit` on the torch backend.

Keras's torch trainer runs `backward` and `optimizer.apply` itself and does not know
`DistributedDataParallel` (which needs the trainer to call the wrapped module's forward). So this
module does what DDP does, around an unchanged `fit`, with `torch.distributed` collectives:
- one start: rank 0's variables (and optimizer state) are broadcast before the first step;
- one update: each step's gradients are averaged over the ranks before the optimizer applies them,
  flattened into 25 MiB buckets (DDP's default) with one asynchronous all-reduce each;
- one set of numbers: the metrics of each epoch's logs and of `evaluate`'s results are computed on
  the metric states summed over the ranks, so every rank logs what one process would have measured
  on all the ranks' images;
- one model: BatchNorm's moving statistics, which each rank updates from its own batches (as the
  official probe does, without SyncBatchNorm), are averaged over the ranks before each evaluation and
  at each epoch's end, so the ranks evaluate and checkpoint the same model.

`TorchDataParallel` is the callback doing it; `MaskedAutoencoder.fit` adds it by itself.
Processes are started by `torchrun`, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT: NCCL on GPUs (one per LOCAL_RANK), gloo on CPUs.
"""

import functools
import os

import keras

BUCKET_BYTES = 25 * 2**20


def initialize():
    """Joins the torchrun job (once) and returns its world size."""
    import torch
    import torch.distributed as dist

    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(
            f"distribution='ddp' runs under torchrun, which sets {', '.join(missing)} (not set here); start with "
            "`torchrun --nproc_per_node=N apps/pretrain.py ... --distribution=ddp`.")
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # before Keras places any variable
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_world_size()


def active():
    """True in a torch.distributed job of more than one process."""
    if keras.backend.backend() != "torch":
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def position():
    """`(rank, world_size)`, `(0, 1)` outside a job."""
    if not active():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def broadcast_variables(variables):
    """Sets every rank's `variables` to rank 0's values."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for variable in variables:
            value = variable.value
            dist.broadcast(value.data, src=0)


def average_gradients(grads):
    """Averages each gradient over the ranks, in place; returns `grads` (None entries stay None)."""
    import torch
    import torch.distributed as dist

    world = dist.get_world_size()
    pending = []
    with torch.no_grad():
        for bucket in _buckets([g for g in grads if g is not None]):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            pending.append((dist.all_reduce(flat, async_op=True), flat, bucket))
        for work, flat, bucket in pending:
            work.wait()
            flat /= world
            offset = 0
            for grad in bucket:
                grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
                offset += grad.numel()
    return grads


def _buckets(grads):
    """Consecutive gradients of one dtype, up to BUCKET_BYTES each (a larger gradient is a bucket alone)."""
    bucket, size = [], 0
    for grad in grads:
        nbytes = grad.numel() * grad.element_size()
        if bucket and (size + nbytes > BUCKET_BYTES or grad.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(grad)
        size += nbytes
    if bucket:
        yield bucket


def average_variables(variables):
    """Sets every rank's `variables` to their mean over the ranks."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for variable in variables:
            dist.all_reduce(variable.value.data)
            variable.value.data /= dist.get_world_size()


def batch_norm_statistics(model):
    """The moving means and variances of `model`'s BatchNormalization layers (each rank updates its own)."""
    return [variable for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
            for variable in (layer.moving_mean, layer.moving_variance)]


def gather_arrays(*arrays):
    """Every rank's numpy arrays, concatenated in rank order along axis 0, on every rank."""
    import numpy as np
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, [np.asarray(array) for array in arrays])
    return tuple(np.concatenate([part[i] for part in gathered]) for i in range(len(arrays)))


def summed_metrics(model, result):
    """`result()` (the model's metrics results) computed on its metrics' states summed over the ranks.

    Keras metrics keep additive states (totals and counts, confusion counts), so their sums are the states one
    process would hold after seeing every rank's batches: the results are exact, whatever each rank's share
    (what tf.distribute does with its SUM-aggregated metric variables). The ranks' own states are left as they
    were.
    """
    import torch
    import torch.distributed as dist

    variables = [variable for metric in model.metrics for variable in metric.variables]
    with torch.no_grad():
        kept = [variable.value.detach().clone() for variable in variables]
        for variable in variables:
            dist.all_reduce(variable.value.data)
    try:
        return result()
    finally:
        with torch.no_grad():
            for variable, value in zip(variables, kept):
                variable.value.data.copy_(value)


def max_over_ranks(number):
    """The largest of the ranks' ints (e.g. the number of a signal that reached only some ranks), on every rank."""
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(number)], dtype=torch.int64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


class TorchDataParallel(keras.callbacks.Callback):
    """Makes `fit` / `evaluate` data parallel over a torchrun job (see the module docstring).

    Each rank must read its own share of every global batch (`make_pretrain_dataset(..., shard=...)`). The
    metrics `fit` logs at each epoch's end and `evaluate` returns are those of the global batches
    (`summed_metrics`); the per-batch progress shows the rank's own. `MaskedAutoencoder.fit` and `evaluate`
    add it themselves; for other models pass it:

        model.fit(dataset_shard, callbacks=[keras_mae.distribution.TorchDataParallel(), ...])
    """

    def set_model(self, model):
        super().set_model(model)
        self._phase = None  # "fit", or "evaluate" for an evaluate outside fit
        self._in_step = False

    def _sum_metrics(self, model):
        # What fit's epoch logs and evaluate's results are read from. Keras's default train and test steps read it
        # too, in every step; summing there would be a collective per step (and the ranks' evaluation steps differ
        # in number when the last batch is partial), so only the reads outside steps are summed.
        result = functools.partial(type(model).get_metrics_result, model)
        model.get_metrics_result = lambda: summed_metrics(model, result) if not self._in_step else result()

    def on_train_batch_begin(self, batch, logs=None):
        self._in_step = True

    def on_train_batch_end(self, batch, logs=None):
        self._in_step = False

    def on_test_batch_begin(self, batch, logs=None):
        self._in_step = True

    def on_test_batch_end(self, batch, logs=None):
        self._in_step = False

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        broadcast_variables([*self.model.variables, *optimizer.variables])
        apply = optimizer.apply

        def averaged_apply(grads, trainable_variables=None):
            return apply(average_gradients(list(grads)), trainable_variables)

        optimizer.apply = averaged_apply
        self._optimizer = optimizer
        self._phase = "fit"
        self._sum_metrics(self.model)

    def on_train_end(self, logs=None):
        vars(self._optimizer).pop("apply", None)
        vars(self.model).pop("get_metrics_result", None)
        self._phase = None

    def on_test_begin(self, logs=None):
        # One model to evaluate (and, at the epoch's end, to checkpoint): the ranks' BatchNorm statistics averaged.
        average_variables(batch_norm_statistics(self.model))
        if self._phase is None:
            self._phase = "evaluate"
            self._sum_metrics(self.model)

    def on_test_end(self, logs=None):
        if self._phase == "evaluate":  # (an evaluation inside fit ends with fit)
            vars(self.model).pop("get_metrics_result", None)
            self._phase = None

    def on_epoch_end(self, epoch, logs=None):
        average_variables(batch_norm_statistics(self.model))
