"""How long the end of a tf.data pass waits for the tuning thread, with tf.data's autotuning on and off.

    .venv/bin/python benchmarks/iterator_teardown.py --rounds=4
    KERAS_BACKEND=torch .venv/bin/python benchmarks/iterator_teardown.py --rounds=3 --features

Default: a dataset of `--batches` small batches, read by a loop that keeps the CPU busy for `--work_s` seconds per
batch (numpy matmuls, as a model's step would), once per round with autotuning on (tf.data's default) and once
off, alternating which goes first. For each pass it prints the time to the last batch and the time `del iterator`
then took: with autotuning on, the deletion may wait for the tuning thread's next round (10 ms x (2^k - 1) after
the iterator was made; `keras_mae/data/autotune.py`).

`--features`: instead, the linear probe's feature pass as the app runs it (`LinearProbe.extract_features` of the demo
preset on `make_eval_dataset(--dataset)`, through Keras's `predict`), timed whole, with the dataset as
`make_eval_dataset` makes it (autotuning off) and with autotuning turned back on (what it was before).

Prints one JSON line per pass and a summary. Not a test: numbers go to BENCHMARKS.md.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def with_autotune(dataset, enabled):
    options = tf.data.Options()
    options.autotune.enabled = enabled
    return dataset.with_options(options)


def busy_pass(dataset, work_s, matrix):
    """(seconds to the last batch, seconds `del iterator` took) of one pass that works `work_s` per batch."""
    start = time.perf_counter()
    iterator = iter(dataset)
    for _ in iterator:
        until = time.perf_counter() + work_s
        while time.perf_counter() < until:
            matrix @ matrix
    last = time.perf_counter()
    del iterator
    return last - start, time.perf_counter() - last


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--work_s", type=float, default=0.36, help="busy seconds per batch (default: 11.5 s a pass)")
    parser.add_argument("--features", action="store_true", help="time the probe's feature pass instead")
    parser.add_argument("--dataset", default="fashion_mnist", help="with --features: the images (split test)")
    parser.add_argument("--batch_size", type=int, default=128, help="with --features")
    args = parser.parse_args()
    if min(args.rounds, args.batches) < 1 or args.work_s < 0:
        parser.error(f"--rounds and --batches must be >= 1 and --work_s >= 0. Received: {vars(args)}")

    if args.features:
        import keras

        from keras_mae import ViTEncoder, data
        from keras_mae.models.linear_probe import LinearProbe

        keras.utils.set_random_seed(0)
        probe = LinearProbe(ViTEncoder.from_preset("mae_vit_tiny_patch4_28"), num_classes=10, pool="mean")
        made = data.make_eval_dataset(args.dataset, probe.encoder.image_size, args.batch_size)
        variants = {"autotune off (make_eval_dataset)": made, "autotune on (before)": with_autotune(made, True)}
        probe.extract_features(made.take(2), verbose=0)  # compiles

        def one_pass(dataset):
            start = time.perf_counter()
            probe.extract_features(dataset, verbose=0)
            return time.perf_counter() - start, None
    else:
        made = tf.data.Dataset.from_tensor_slices(np.zeros((args.batches, 4), np.float32)).batch(1)
        variants = {"autotune on (default)": with_autotune(made, True), "autotune off": with_autotune(made, False)}
        matrix = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)

        def one_pass(dataset):
            return busy_pass(dataset, args.work_s, matrix)

    results = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name in list(variants)[:: 1 if round_ % 2 == 0 else -1]:
            seconds, deletion = one_pass(variants[name])
            results[name].append((seconds, deletion))
            print(json.dumps({"round": round_, "variant": name, "pass_s": round(seconds, 2),
                              "del_iterator_s": None if deletion is None else round(deletion, 2)}), flush=True)
    print(f"\n{'feature pass' if args.features else 'busy pass'}, {tf.__version__=}, {args.rounds} rounds")
    print("| variant | pass s (each round) | `del iterator` s (each round) | whole pass, median s |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        passes = ", ".join(f"{s:.2f}" for s, _ in runs)
        deletions = "-" if runs[0][1] is None else ", ".join(f"{d:.2f}" for _, d in runs)
        whole = statistics.median(s + (d or 0.0) for s, d in runs)
        print(f"| {name} | {passes} | {deletions} | {whole:.2f} |")


if __name__ == "__main__":
    main()
