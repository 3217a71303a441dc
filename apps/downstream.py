"""What linear_probe.py and finetune.py share: a pretrained encoder from anywhere, its normalisation, results."""

import os

import common
import recipe

ENCODER_HELP = (
    "Pretrained encoder: a pretraining workdir (encoder.keras, else its latest checkpoint), a .keras file "
    "(MaskedAutoencoder, ViTEncoder, ViTClassifier or LinearProbe), encoder .weights.h5 (with --preset), or "
    "official / timm / Hugging Face weights (.pth, .safetensors, .npz, a HF directory)."
)


def _encoder_of(model):
    from keras_mae.models import ViTEncoder

    encoder = model if isinstance(model, ViTEncoder) else getattr(model, "encoder", None)
    if not isinstance(encoder, ViTEncoder):
        raise common.UserError(f"{type(model).__name__} holds no ViTEncoder; pass an MAE, encoder or classifier.")
    return encoder


def setup_distribution(FLAGS):
    """--distribution for a downstream app: `(scope, replicas)`; its batches split evenly over the replicas.

    Several processes: torch DDP only (its evaluation takes uneven shares of the last batch; JAX's global
    arrays and TF workers' splits need equal ones).
    """
    from keras_mae.distribution import setup_distribution

    if FLAGS.distribution in ("data_parallel", "multi_worker_mirrored") and multi_process():
        raise common.UserError(f"--distribution={FLAGS.distribution} with several processes is for pretrain.py; the "
                               "downstream apps run several processes on torch (--distribution=ddp under torchrun), "
                               "or several devices of one process.")
    try:
        scope, replicas = setup_distribution(FLAGS.distribution)
    except ValueError as error:
        raise common.UserError(str(error))
    if FLAGS.batch_size % replicas:
        raise common.UserError(f"--batch_size={FLAGS.batch_size} (global) must be divisible by the {replicas} "
                               "replicas.")
    return scope, replicas


def multi_process():
    """Whether a launcher started several processes (torchrun, Keras's JAX variables, TF_CONFIG workers)."""
    import json

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")) > 1:
        return True
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError:
        return False
    return sum(len(tasks) for tasks in cluster.values()) > 1


def load_encoder(spec, preset=None, image_size=None):
    """A pretrained `ViTEncoder` and what is known about its pretraining.

    Args:
        spec: str. See ENCODER_HELP.
        preset: str or None. Architecture of a bare `.weights.h5` file.
        image_size: (height, width) or None. For official weights: the size to build at.

    Returns:
        `(encoder, info)`: info has `source` (what was loaded), `modified`
        (its mtime) and, from a workdir's run.json, `mean`, `std` and `dataset`.
    """
    import keras

    from keras_mae import ViTEncoder, checkpoints, runs

    spec = os.path.expanduser(spec)
    if not os.path.exists(spec):
        raise common.UserError(f"--encoder {spec!r} does not exist; pass a pretraining workdir or a model file.")
    run = runs.run_of(spec)
    known = {key: run.get(key) for key in ("mean", "std", "dataset", "eval_dataset")}
    if runs.is_workdir(spec):
        encoder, source, path = runs.load_pretrained(spec, "encoder")
        return _encoder_of(encoder), {"source": source, "modified": os.path.getmtime(path), **known, "workdir": spec}
    info = {"source": spec, "modified": os.path.getmtime(spec)}
    if spec.endswith(".weights.h5"):
        if not preset:
            raise common.UserError(f"{spec!r} holds weights only; pass the --preset whose encoder saved them.")
        encoder = ViTEncoder.from_preset(preset)
        encoder.load_weights(spec)
        return encoder, info
    if spec.endswith(".keras"):
        model = keras.saving.load_model(spec, compile=False)
        if run:  # a .keras file inside a pretraining workdir
            info.update(known, workdir=os.path.dirname(os.path.abspath(spec)))
        return _encoder_of(model), info
    model = checkpoints.load_model(spec, image_size=image_size)  # official / timm / HF layouts
    return _encoder_of(model), info


def prepare_workdir(workdir, encoder, name, what, model_flags=(), restart_flags=()):
    """--workdir, else `<encoder workdir>/<name>`; never a pretraining workdir; created, with its flags.txt.

    Args:
        workdir: str or None. --workdir.
        encoder: str or None. --encoder.
        name: str. Subfolder of the encoder workdir used by default ("linear_probe", "finetune").
        what: str. What goes there, for the error.
        model_flags: flags that shape the checkpointed model: never changed on resume.
        restart_flags: flags besides the encoder and the data whose change starts the run afresh
            (`forget_other_runs`), so they are not compared.
    """
    from keras_mae import runs

    if workdir is None:
        if not (encoder and runs.is_workdir(encoder)):
            raise common.UserError(f"Pass --workdir (where {what} go).")
        workdir = os.path.join(encoder, name)
    if runs.is_workdir(workdir):
        raise common.UserError(f"--workdir {workdir!r} is a pretraining workdir; pass another, e.g. {workdir}/{name}.")
    common.check_workdir(workdir)
    # The encoder and the data start the run afresh (forget_other_runs); other changes would mix two runs.
    recipe.check_same_run(workdir, model_flags, restart_flags=(
        "encoder", "dataset", "data_dir", "train_split", "eval_dataset", "val_fraction", "eval_split", *restart_flags))
    recipe.write_flags(workdir)
    return workdir


def random_encoder_like(encoder, seed):
    """A freshly initialised encoder of `encoder`'s config: the random-init baseline (sin-cos table included)."""
    import keras

    from keras_mae import ViTEncoder

    keras.utils.set_random_seed(seed)
    config = {key: value for key, value in encoder.get_config().items() if key not in ("name", "trainable", "dtype")}
    return ViTEncoder(**config, name="random_encoder")


def resolve_dataset(flag_value, info):
    """--dataset, else the pretraining's."""
    dataset = flag_value or info.get("dataset")
    if not dataset:
        raise common.UserError("Pass --dataset (the encoder does not say which data it was pretrained on).")
    return dataset


def labelled_split(FLAGS, info, num_channels, purpose, workdir):
    """The labelled train / evaluation split of --dataset (else the pretraining's), saved in `workdir`.

    A held-out split saved by the pretraining (or by an earlier run in `workdir`) is reused, so the
    evaluation images are ones the encoder was never pretrained on.

    Args:
        FLAGS: the app's flags (dataset, eval_dataset, val_fraction, train_split, eval_split, data_dir, seed,
            batch_size, steps_per_epoch).
        info: the pretraining run.json (or {}), for the dataset name, its split and mean/std.
        num_channels: int. Channels the encoder takes.
        purpose: str. Named in the error when the data has no labels or no evaluation split.
        workdir: str. Where the split is saved.

    Returns:
        `(dataset name, Split, (mean, std), steps per epoch)`; steps is 0 when there are too few images.
    """
    dataset = resolve_dataset(FLAGS.dataset, info)
    eval_dataset = FLAGS.eval_dataset or (info.get("eval_dataset") if not FLAGS.dataset else None)
    split = common.split_data(FLAGS, dataset, num_channels, workdir, saved=[info.get("workdir")],
                              eval_dataset=eval_dataset)
    try:
        split.require_labelled_eval(purpose)
    except ValueError as error:
        raise common.UserError(str(error))
    steps = recipe.steps_per_epoch(split.train.num_examples, dataset, allow_none=True)
    name = dataset if isinstance(dataset, str) else "data"
    return name, split, statistics(split.train, info), steps


def metric_scope(split):
    """How every printed metric names its images: `<split name> (<count> images)`."""
    return f"{split.eval_name} ({split.eval.num_examples} images)"


def statistics(source, info):
    """Normalisation: the pretraining run's mean/std when known (the encoder saw those), else the data's."""
    from keras_mae.data import fit_normalization

    if info.get("mean") and info.get("std"):
        return fit_normalization(info["mean"], info["std"], source.num_channels)
    return source.mean, source.std


def forget_other_runs(workdir, key):
    """Drops the checkpoints of a run on another encoder / data in this workdir, so rerunning does not resume them.

    Rerunning `make pretrain` after more pretraining must probe the new encoder, not evaluate the old head.

    Args:
        workdir: str. The downstream run's workdir.
        key: str. What the run depends on (JSON); kept in workdir/run_key.json.
    """
    import shutil

    from keras_mae.distribution import barrier

    path = os.path.join(workdir, "run_key.json")
    if os.path.isfile(path):
        with open(path) as f:
            if f.read() == key:
                barrier()  # every process reads the key before process 0 may write another
                return
        print(f"The encoder or data changed since the last run in {workdir}: starting afresh")
        if common.chief():
            shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    if common.chief():
        with open(path, "w") as f:
            f.write(key)
    barrier()  # no process looks for checkpoints before process 0 has removed the other run's


def evaluate(model, dataset):
    """`model.evaluate(dataset)` as a dict of floats: over every process's share of `dataset` under torch DDP."""
    from keras_mae import distribution

    results = model.evaluate(dataset, verbose=0, return_dict=True, callbacks=distribution.callbacks())
    return {metric: float(value) for metric, value in results.items()}


def write_json(path, record):
    from keras_mae.utils.atomic import write_json_atomic

    if common.chief():
        write_json_atomic(path, record)
    print(f"Results:          {path}")
