"""PyTorch data parallelism (torchrun, torch.distributed) for Keras's `fit` on the torch backend.

Keras's torch trainer runs `backward` and `optimizer.apply` itself and does not know
`DistributedDataParallel` (which needs the trainer to call the wrapped module's forward). So this
module does what DDP does, around an unchanged `fit`, with `torch.distributed` collectives:
- one start: rank 0's variables (and optimizer state) are broadcast before the first step;
- one update: each step's gradients are averaged over the ranks before the optimizer applies them,
  flattened into 25 MiB buckets (DDP's default) with one asynchronous all-reduce each;
- one set of numbers: each epoch's metrics are averaged over the ranks before the callbacks after it
  see them, so every rank logs what one process would on the global batch (the ranks' batches are
  equal shares). `evaluate` returns what its model's metrics hold: the MAE reduces its loss over the
  ranks in its test step (exact); for other models use `average_logs` on the returned dict.

`TorchDataParallel` is the callback doing it; `MaskedAutoencoder.fit` adds it by itself.
Processes are started by `torchrun`, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT: NCCL on GPUs (one per LOCAL_RANK), gloo on CPUs.
"""

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


def average_logs(logs):
    """Averages the numeric entries of a Keras logs dict over the ranks, in place (the same keys on every rank)."""
    import torch
    import torch.distributed as dist

    if not logs:
        return logs
    names = sorted(name for name, value in logs.items() if _is_number(value))
    values = torch.tensor([float(logs[name]) for name in names], dtype=torch.float64)
    dist.all_reduce(values)
    for name, value in zip(names, (values / dist.get_world_size()).tolist()):
        logs[name] = value
    return logs


def mean_over_ranks(value):
    """A scalar tensor's mean over the ranks (every rank gets it)."""
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def max_over_ranks(number):
    """The largest of the ranks' ints (e.g. the number of a signal that reached only some ranks), on every rank."""
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(number)], dtype=torch.int64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def _is_number(value):
    return isinstance(value, (int, float)) or (hasattr(value, "shape") and tuple(value.shape) == ())


class TorchDataParallel(keras.callbacks.Callback):
    """Makes `fit` / `evaluate` data parallel over a torchrun job (see the module docstring).

    Put it first in `callbacks`, so the callbacks after it see metrics averaged over the ranks. Each
    rank must read its own share of every global batch (`make_pretrain_dataset(..., shard=...)`).
    `MaskedAutoencoder.fit` adds it itself; for other models pass it:

        model.fit(dataset_shard, callbacks=[keras_mae.distribution.TorchDataParallel(), ...])
    """

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

    def on_train_end(self, logs=None):
        if "apply" in vars(self._optimizer):
            del self._optimizer.apply

    def on_epoch_end(self, epoch, logs=None):
        average_logs(logs)  # the dict the later callbacks (and the History) get
