"""tf.data's autotuning off, for inputs whose iterator Keras deletes after each pass (evaluation, prediction,
features) and in-memory inputs with nothing to tune.

With autotuning on (tf.data's default), every iterator runs a tuning thread that sleeps between its rounds of
tuning for periods that double from 10 ms, up to 60 s. In TensorFlow 2.21, deleting the iterator often waits for
that thread's current sleep to end instead of waking it: the last batch comes on time, and then the pass ends
only at the thread's next round, 10 ms x (2^k - 1) after the iterator was made (10.23, 20.47, 40.95, 81.91 s,
then every 60 s). Measured on this project's CPUs (BENCHMARKS.md, "tf.data's tuning thread at the end of a
pass"): in about half of the passes, a pass of 12 s ended at 20.47 s and a probe feature pass of 27 s at 41.0 s.
Keras deletes an evaluation's or a prediction's iterator at the end of every call, so each such pass could take
up to twice its time, or 60 s more.

Without autotuning no such thread runs: `AUTOTUNE` parallelism is fixed at min(16, the thread pool's size) and
prefetch buffers keep their own (legacy) sizing. Inputs that decode and augment for training keep autotuning, for
hosts with more cores than that: with `steps_per_epoch`, Keras keeps their iterator for the whole `fit`, so the
wait (at most 60 s) comes once, at its end.
"""

import tensorflow as tf


def without_autotune(dataset):
    """`dataset` with tf.data's autotuning off (see the module): its iterator's deletion waits for no thread."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
