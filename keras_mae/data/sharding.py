"""Each process's share of every global batch: the rows a data-parallel process reads and decodes."""

import tensorflow as tf


def check_shard(shard, batch_size):
    """`shard` as `(index, count)` ints, validated against the global `batch_size`; None is `(0, 1)`."""
    index, count = (0, 1) if shard is None else shard
    if not (isinstance(count, int) and isinstance(index, int) and count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must be (index, count) with 0 <= index < count. Received: shard={shard!r}")
    if batch_size % count:
        raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by the {count} processes "
                         f"sharing it; pass a multiple of {count}.")
    return index, count


def in_shard(position, index, count, batch_size):
    """Whether stream position `position` falls in process `index`'s rows of its batch of `batch_size`."""
    return (position % batch_size) // (batch_size // count) == index


def shard_rows(dataset, index, count, batch_size, start=0):
    """The elements of `dataset` in rows `[index * b, (index + 1) * b)`, b = batch_size / count, of every batch.

    Batching the result by `b` gives each process its rows of each global batch; the `count` processes'
    batches, stacked in order, are the global batch. `start` is the stream position of the first element.
    """
    if count == 1:
        return dataset
    start = tf.cast(start, tf.int64)
    return (tf.data.Dataset.zip(tf.data.Dataset.range(start, tf.int64.max), dataset)
            .filter(lambda position, _: in_shard(position, index, count, batch_size))
            .map(lambda _, example: example))


def rows_of(num_examples, index, count, batch_size):
    """How many of `num_examples`, batched by `batch_size`, fall in process `index`'s rows."""
    rows = batch_size // count
    whole, rest = divmod(num_examples, batch_size)
    return whole * rows + min(max(rest - index * rows, 0), rows)
