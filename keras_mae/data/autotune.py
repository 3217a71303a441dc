"""tf.data's autotuning off, for inputs whose iterator Keras deletes after each pass (evaluation, prediction,
features), in-memory inputs with nothing to tune, and training inputs on hosts where it cannot raise parallelism.

With autotuning on (tf.data's default), every iterator runs a tuning thread that sleeps between its rounds of
tuning for periods that double from 10 ms, up to 60 s. In TensorFlow 2.21, deleting the iterator often waits for
that thread's current sleep to end instead of waking it: the last batch comes on time, and then the pass ends
only at the thread's next round, 10 ms x (2^k - 1) after the iterator was made (10.23, 20.47, 40.95, 81.91 s,
then every 60 s). Measured on this project's CPUs (BENCHMARKS.md, "tf.data's tuning thread at the end of a
pass"): in about half of the passes, a pass of 12 s ended at 20.47 s and a probe feature pass of 27 s at 41.0 s.
Keras deletes an evaluation's or a prediction's iterator at the end of every call, so each such pass could take
up to twice its time, or 60 s more.

Without autotuning no such thread runs: `AUTOTUNE` parallelism is fixed at min(16, the thread pool's size, which
is the CPUs the process may use) and prefetch buffers keep their own (legacy) sizing. Where the process has at most
16 CPUs that is the most parallelism autotuning could choose, so the training pipelines turn it off there too
(`autotune_where_it_pays`): their iterator lives for a whole `fit` (`steps_per_epoch`), so they waited once, at
its end, up to the fit's own length or 60 s. On hosts with more CPUs they keep autotuning, which can raise the
parallelism past 16, and that one wait.
"""

import os

import tensorflow as tf

# tf.data's AUTOTUNE parallelism without autotuning: min(this, the thread pool's size).
FIXED_PARALLELISM = 16


def without_autotune(dataset):
    """`dataset` with tf.data's autotuning off (see the module): its iterator's deletion waits for no thread."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def autotune_where_it_pays(dataset):
    """A training input: autotuning kept where it can raise the parallelism (more than 16 CPUs), off elsewhere."""
    return dataset if process_cpus() > FIXED_PARALLELISM else without_autotune(dataset)


def process_cpus():
    """The CPUs this process may run on (its affinity), the size of tf.data's default thread pool."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
