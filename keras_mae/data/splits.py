"""Train and evaluation splits of any data spec: the one place that decides which images train and which evaluate.

The evaluation images of a dataset are, in this order:
1. `eval_dataset`, when given: any spec (a folder, a `.npz`, a builtin name, `tfds:NAME`); it must
   not share a file with the training images.
2. A held-out `val_fraction` of the training images, when `val_fraction` is given and > 0.
3. The dataset's own evaluation split: the test split of a builtin dataset or of a keras-style
   `.npz` (`x_test`), a TFDS test / validation split, `val/` (or `validation/`, `test/`) beside
   `train/` in a folder (the ImageNet layout), `val/images` with `val_annotations.txt` (Tiny-ImageNet).
4. Otherwise a held-out `DEFAULT_VAL_FRACTION` (10%); with `val_fraction=0`, none at all.

Held-out splits are stratified by class (scikit-learn's `train_test_split`), deterministic from
`seed`, and can be saved in a workdir (`save_split`: `splits/split.json`, `train.txt`, `eval.txt`)
so that a resumed run and the later apps reuse the very same images (`saved=`).
"""

import dataclasses
import json
import os
from typing import Optional

import numpy as np
from absl import logging

from keras_mae.data import folder_layouts
from keras_mae.data.base import Source
from keras_mae.data.builtin import BUILTIN_NAMES
from keras_mae.data.sources import load_source
from keras_mae.data.tfds_source import parse_tfds_name, tfds_split_names

SPLIT_DIR = "splits"
DEFAULT_VAL_FRACTION = 0.1
_NAMED = 3  # Files named in an overlap error.


@dataclasses.dataclass
class Split:
    """The training and evaluation sources of a dataset, and how the evaluation images were chosen.

    Args:
        train: `Source` or None. The images to train on; None when unknown (`eval_only`).
        eval: `Source` or None. The evaluation images; None when the data has no evaluation split.
        eval_name: str or None. The evaluation split's name, as printed with every metric:
            "test", "val", "held-out val" or "eval_dataset".
        how: str. Where the evaluation images come from, in words.
        record: dict. What `save_split` writes to `splits/split.json`.
        held_out: `(train_ids, eval_ids)` or None. For held-out splits, each part's entries
            (paths relative to the folder, or indices): `train.txt` and `eval.txt`.
    """

    train: Optional[Source]
    eval: Optional[Source]
    eval_name: Optional[str]
    how: str
    record: dict
    held_out: Optional[tuple] = None

    def describe(self):
        """One line: each part's name and image count, and how the evaluation images were chosen."""
        train = "train unknown" if self.train is None else f"train {_count(self.train)} images"
        if self.eval is None:
            return f"{train}; no evaluation split ({self.how})"
        return f"{train}, {self.eval_name} {_count(self.eval)} images ({self.how})"

    def require_labelled_eval(self, purpose):
        """Raises a one-line ValueError unless both parts are labelled and an evaluation split exists."""
        if self.eval is None:
            raise ValueError(f"{purpose} needs an evaluation split and {self.record['dataset']!r} has none "
                             f"({self.how}); pass --eval_dataset=PATH or --val_fraction=0.1.")
        for part, source in (("training", self.train), (self.eval_name, self.eval)):
            if source is None:
                continue
            if not source.num_classes or (source.labels is not None and (source.labels < 0).any()):
                raise ValueError(f"{purpose} needs labels, and the {part} images ({source.name}) have none; "
                                 "put each class in its own subfolder.")


def _count(source):
    return f"{source.num_examples:,}" if source.num_examples is not None else "?"


def spec_key(spec):
    """A comparable name of a data spec (absolute real path, builtin or tfds name), or None for in-memory data."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        return None
    if spec.startswith("tfds:") or spec.lower().replace("-", "_") in BUILTIN_NAMES:
        return spec.lower().replace("-", "_") if not spec.startswith("tfds:") else spec
    return os.path.realpath(os.path.expanduser(spec))


def _check_fraction(val_fraction):
    if val_fraction is not None and not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise ValueError(f"val_fraction must be in [0, 1). Received: val_fraction={val_fraction!r}")


def split_dataset(dataset, eval_dataset=None, val_fraction=None, seed=0, train_split="train", eval_split=None,
                  data_dir=None, num_channels=None, saved=()):
    """Decides the training and evaluation images of `dataset` (see the module docstring).

    Args:
        dataset: any spec `load_source` takes.
        eval_dataset: spec or None. Explicit evaluation images.
        val_fraction: float in [0, 1) or None. Fraction of the training images held out for
            evaluation; None holds out 10% only when the data has no evaluation split of its own.
        seed: int. Seed of the held-out split. Defaults to 0.
        train_split: str. The training split of builtin, `.npz` and TFDS data. Defaults to "train".
        eval_split: str or None. The evaluation split of builtin / TFDS data, or the evaluation
            subfolder of an ImageNet-layout folder; None picks test (or validation, val).
        data_dir: str or None. TFDS data directory.
        num_channels: int or None. Channels to convert every image to.
        saved: sequence of workdirs. The first holding a saved split of the same data is reused.

    Returns:
        `Split`.
    """
    _check_fraction(val_fraction)
    if eval_dataset is not None and val_fraction:
        raise ValueError(f"Pass --eval_dataset or --val_fraction, not both. Received: eval_dataset={eval_dataset!r}, "
                         f"val_fraction={val_fraction}")
    key, eval_key = spec_key(dataset), spec_key(eval_dataset) if eval_dataset is not None else None
    record = {"dataset": key or "data", "eval_dataset": eval_key}
    for workdir in saved:
        saved_split = _read_saved(workdir, record, val_fraction)
        if saved_split is not None:
            return _rebuild(dataset, saved_split, workdir, train_split, data_dir, num_channels)
    train = _train_part(dataset, train_split, data_dir, num_channels)
    if eval_dataset is not None:
        evaluation, name = _explicit_eval(eval_dataset, eval_split, data_dir, train.num_channels)
        evaluation = _align_classes(evaluation, train)
        _check_disjoint(train, evaluation, dataset, eval_dataset)
        return Split(train, evaluation, "eval_dataset", f"--eval_dataset {eval_dataset}", {**record, "kind": "eval_dataset"})
    if not val_fraction:
        natural = _own_eval(dataset, eval_split, data_dir, train)
        if natural is not None:
            evaluation, name, how = natural
            _check_disjoint(train, evaluation, dataset, dataset)
            return Split(train, evaluation, name, how, {**record, "kind": "own", "eval_name": name})
        if val_fraction == 0:
            return Split(train, None, None, "--val_fraction=0", {**record, "kind": "none"})
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    if train.key_table is None and isinstance(dataset, str) and dataset.startswith("tfds:"):
        return _tfds_hold_out(dataset, train, fraction, train_split, data_dir, record)
    return hold_out(train, fraction, seed, record)


def _tfds_hold_out(dataset, train, fraction, train_split, data_dir, record):
    """The last `fraction` of a TFDS split, by TFDS slicing (not stratified: TFDS streams the labels)."""
    from keras_mae.data.tfds_source import load_tfds

    builder_name, split = parse_tfds_name(dataset[len("tfds:"):], train_split)
    num_eval = max(1, round(train.num_examples * fraction))
    cut = train.num_examples - num_eval
    train = load_tfds(builder_name, f"{split}[:{cut}]", data_dir, train.num_channels)
    evaluation = load_tfds(builder_name, f"{split}[{cut}:]", data_dir, train.num_channels, shuffle_files=False)
    how = f"the last {num_eval} examples ({fraction:.0%}) of {dataset} {split}, by TFDS slicing (not stratified)"
    return Split(train, evaluation, "held-out val", how, {**record, "kind": "tfds_slice", "val_fraction": fraction})


def eval_only(eval_dataset, eval_split=None, data_dir=None, num_channels=None):
    """A `Split` of evaluation images alone, for a model whose training images are unknown (published weights)."""
    evaluation, _ = _explicit_eval(eval_dataset, eval_split, data_dir, num_channels)
    how = f"--eval_dataset {eval_dataset}; the model's training images are not known, so not checked for overlap"
    return Split(None, evaluation, "eval_dataset", how, {"dataset": None, "eval_dataset": spec_key(eval_dataset),
                                                        "kind": "eval_only"})


def _train_part(dataset, train_split, data_dir, num_channels):
    if isinstance(dataset, str) and os.path.isdir(os.path.expanduser(dataset)):
        root = os.path.expanduser(dataset)
        if folder_layouts.folder_layout(root) != "single":
            return folder_layouts.load_train_folder(root, num_channels)
    return load_source(dataset, train_split, data_dir, num_channels)


def _explicit_eval(eval_dataset, eval_split, data_dir, num_channels):
    """The source of --eval_dataset: a folder's own evaluation part when it has train/, else all of it."""
    if isinstance(eval_dataset, str):
        path = os.path.expanduser(eval_dataset)
        if os.path.isdir(path) and folder_layouts.folder_layout(path) not in ("single", "train_only"):
            classes = folder_layouts.load_train_folder(path, num_channels).class_names
            return folder_layouts.load_eval_folder(path, classes, eval_split, num_channels)
        if path.lower().endswith(".npz") and os.path.isfile(path):
            with np.load(path, allow_pickle=False) as f:
                split = "test" if "x_test" in f.files and "x" not in f.files and "images" not in f.files else "train"
            return load_source(eval_dataset, split, data_dir, num_channels), split
    return load_source(eval_dataset, eval_split or "test", data_dir, num_channels), eval_split or "test"


def _own_eval(dataset, eval_split, data_dir, train):
    """`(source, name, how)` of the dataset's own evaluation split, or None when it has none."""
    if not isinstance(dataset, (str, os.PathLike)):
        return None
    dataset = os.fspath(dataset)
    name = dataset.lower().replace("-", "_")
    channels = train.num_channels
    if name in BUILTIN_NAMES:
        split = eval_split or "test"
        return load_source(name, split, None, channels), split, f"the {split} split of {name}"
    if dataset.startswith("tfds:"):
        builder_name, _ = parse_tfds_name(dataset[len("tfds:"):], "train")
        splits = tfds_split_names(builder_name, data_dir)
        split = eval_split or next((s for s in ("test", "validation", "val") if s in splits), None)
        if split is None:
            return None
        source = load_source(f"tfds:{builder_name}:{split}", split, data_dir, channels)
        return source, split, f"the {split} split of {dataset}"
    path = os.path.expanduser(dataset)
    if os.path.isdir(path):
        layout = folder_layouts.folder_layout(path)
        if layout in ("single", "train_only"):
            return None
        source, folder = folder_layouts.load_eval_folder(path, train.class_names, eval_split, channels)
        what = "val/images labelled by val_annotations.txt" if layout == "tiny_imagenet" else f"{folder}/"
        return source, folder, f"{what} of {dataset}"
    if path.lower().endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            files = f.files
        split = eval_split or "test"
        if f"x_{split}" in files and "x" not in files and "images" not in files:
            return load_source(path, split, None, channels), split, f"x_{split} of {dataset}"
    return None


def hold_out(source, fraction, seed, record=None):
    """Holds out `fraction` of `source`, stratified by class when it is labelled: a `Split`.

    Args:
        source: `Source` with a key table (folders, arrays).
        fraction: float in (0, 1).
        seed: int. The split depends on it alone.
        record: dict or None. Extra entries of the split record.

    Returns:
        `Split` whose `held_out` lists each part's files (relative to the folder) or indices.
    """
    if source.key_table is None:
        raise ValueError(f"{source.name} cannot hold out images (it is read as a stream); pass --eval_dataset.")
    from sklearn.model_selection import train_test_split

    labels = source.labels
    labelled = bool(source.num_classes) and bool((labels >= 0).all())
    positions = np.arange(source.num_examples)
    if labelled:
        counts = np.bincount(labels, minlength=source.num_classes)
        names = source.class_names or [str(i) for i in range(source.num_classes)]
        small = [names[i] for i in np.flatnonzero((counts > 0) & (counts < 2))]
        if small:
            raise ValueError(f"Class {small[0]!r} of {source.name} has 1 image; a stratified evaluation split needs at "
                             "least 2 per class: add images to that class folder, or pass --eval_dataset.")
    try:
        train_ids, eval_ids = train_test_split(positions, test_size=fraction, random_state=seed,
                                               stratify=labels if labelled else None)
    except ValueError as error:
        raise ValueError(f"Cannot hold out {fraction:g} of the {source.num_examples} images of {source.name}"
                         f"{' stratified by class' if labelled else ''} ({error}); add images, change "
                         "--val_fraction or pass --eval_dataset.") from None
    train_ids, eval_ids = np.sort(train_ids), np.sort(eval_ids)
    how = (f"{fraction:.0%} of {source.name} held out" + (", stratified by class" if labelled else "")
           + f", seed {seed}")
    record = {**(record or {"dataset": source.name, "eval_dataset": None}), "kind": "held_out",
              "val_fraction": float(fraction), "seed": int(seed), "stratified": labelled}
    ids = lambda positions: _ids_of(source, positions)  # noqa: E731
    return Split(source.subset(train_ids), source.subset(eval_ids), "held-out val", how, record,
                 (ids(train_ids), ids(eval_ids)))


def fixed_subset(source, num_images, seed=0, balanced=False):
    """At most `num_images` examples of `source`, the same ones at every call.

    Args:
        source: `Source`.
        num_images: int. How many to keep.
        seed: int. The draw depends on it alone.
        balanced: bool. Take the classes in turn (one image of each class, then a
            second of each, ...), so that a few images show every class; else a
            plain random draw, which keeps the class proportions.

    Returns:
        `Source` (this one when it is already small enough and no order is asked).
    """
    import dataclasses

    count = source.num_examples
    if source.key_table is None:  # a stream (TFDS): a fixed-seed shuffle of its cheap keys
        if count is not None and count <= num_images:
            return source
        keys = source.keys.shuffle(num_images, seed=seed, reshuffle_each_iteration=False).take(num_images)
        return dataclasses.replace(source, dataset=source.decode_fn(keys), keys=None, decode_fn=None,
                                   crop_decode_fn=None, num_examples=num_images)
    if count <= num_images and not balanced:
        return source
    order = np.random.default_rng(seed).permutation(count)
    labels = source.labels[order]
    if balanced and source.num_classes:
        rank = np.zeros(count, np.int64)  # i-th image of its class in the shuffled order
        for label in np.unique(labels):
            rank[labels == label] = np.arange(np.sum(labels == label))
        order = order[np.lexsort((labels, rank))]
    return source.subset(order[:num_images])


def _ids_of(source, positions):
    """What train.txt / eval.txt list: paths relative to the folder, or indices."""
    if source.files is None:
        return [str(int(source.key_table[0][p])) for p in positions]
    return [os.path.relpath(source.files[p], source.name) for p in positions]


def _check_disjoint(train, evaluation, train_spec, eval_spec):
    """Refuses evaluation images that are also training images: the same files, or the same data and split."""
    if train.files is not None and evaluation.files is not None:
        train_files = {os.path.realpath(f) for f in train.files}
        shared = [f for f in evaluation.files if os.path.realpath(f) in train_files]
        if shared:
            named = ", ".join(shared[:_NAMED]) + (", ..." if len(shared) > _NAMED else "")
            raise ValueError(f"The evaluation images overlap the training images: {len(shared)} of the "
                             f"{len(evaluation.files)} files of {eval_spec} are training files of {train_spec} "
                             f"({named}); evaluate on images the model does not train on.")
    elif train.files is None and evaluation.files is None and train.name == evaluation.name:
        raise ValueError(f"The evaluation images are the training images ({train.name}); pass an --eval_dataset "
                         "of other images, or --val_fraction to hold some out.")


def _align_classes(evaluation, train):
    """Relabels the evaluation source in the training classes (matched by name), or checks the label range."""
    if train.class_names and evaluation.class_names and tuple(evaluation.class_names) != tuple(train.class_names):
        index = {c: i for i, c in enumerate(train.class_names)}
        unknown = sorted(set(evaluation.class_names) - set(index))
        if unknown:
            raise ValueError(f"The evaluation data {evaluation.name} has classes the training data lacks: "
                             f"{', '.join(unknown[:5])}; give both the same class names.")
        if evaluation.key_table is None:
            raise ValueError(f"The classes of {evaluation.name} are in another order than the training data's.")
        mapping = np.array([index[c] for c in evaluation.class_names], np.int32)
        labels = evaluation.labels
        evaluation = evaluation.relabel(np.where(labels >= 0, mapping[np.maximum(labels, 0)], -1))
        evaluation.class_names, evaluation.num_classes = train.class_names, train.num_classes
    elif train.num_classes and evaluation.num_classes and evaluation.num_classes > train.num_classes:
        raise ValueError(f"The evaluation data {evaluation.name} has {evaluation.num_classes} classes, the training "
                         f"data {train.num_classes}; give both the same classes.")
    return evaluation


# === Saved splits ===


def save_split(split, workdir):
    """Writes `split` to `workdir/splits/` (split.json, and train.txt / eval.txt for a held-out split)."""
    from keras_mae.utils.atomic import atomic_path, write_json_atomic

    directory = os.path.join(workdir, SPLIT_DIR)
    os.makedirs(directory, exist_ok=True)
    record = {**split.record, "num_train": None if split.train is None else split.train.num_examples,
              "num_eval": None if split.eval is None else split.eval.num_examples}
    path = os.path.join(directory, "split.json")
    if split.held_out is not None:
        for name, ids in zip(("train.txt", "eval.txt"), split.held_out):
            with atomic_path(os.path.join(directory, name)) as tmp:
                with open(tmp, "w") as f:
                    f.write("\n".join(ids) + "\n")
    write_json_atomic(path, record)
    return directory


def _read_saved(workdir, record, val_fraction):
    """The saved held-out split of the same data in `workdir`, or None."""
    path = os.path.join(workdir, SPLIT_DIR, "split.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    same = (saved.get("dataset"), saved.get("eval_dataset")) == (record["dataset"], record["eval_dataset"])
    if not same or saved.get("kind") != "held_out":
        return None
    if val_fraction is not None and val_fraction != saved["val_fraction"]:
        raise ValueError(f"{path} holds out {saved['val_fraction']:g} of {record['dataset']} (seed {saved['seed']}) "
                         f"and --val_fraction={val_fraction:g} differs: the models there trained on that split; "
                         "drop --val_fraction to reuse it, or pass another --workdir / --encoder.")
    lists = []
    for name in ("train.txt", "eval.txt"):
        with open(os.path.join(workdir, SPLIT_DIR, name)) as f:
            lists.append([line.rstrip("\n") for line in f if line.strip()])
    return {**saved, "lists": lists}


def _rebuild(dataset, saved, workdir, train_split, data_dir, num_channels):
    """The `Split` of a saved held-out split: the listed images, whatever was added to the data since."""
    full = _train_part(dataset, train_split, data_dir, num_channels)
    ids = _ids_of(full, np.arange(full.num_examples))
    position = {entry: i for i, entry in enumerate(ids)}
    parts = []
    for entries in saved["lists"]:
        found = [position[e] for e in entries if e in position]
        if len(found) < len(entries):
            logging.warning("%d images of the split saved in %s are gone from %s", len(entries) - len(found),
                            workdir, full.name)
        parts.append(np.array(found, np.int64))
    if not (len(parts[0]) and len(parts[1])):
        raise ValueError(f"The split saved in {os.path.join(workdir, SPLIT_DIR)} names no image of {full.name} any "
                         "more; delete that folder to split anew.")
    if set(parts[0].tolist()) & set(parts[1].tolist()):
        raise ValueError(f"The split saved in {os.path.join(workdir, SPLIT_DIR)} lists images in both parts.")
    unlisted = full.num_examples - len(parts[0]) - len(parts[1])
    if unlisted > 0:
        logging.warning("%d images of %s are not in the split saved in %s and are left out (delete %s to split "
                        "anew)", unlisted, full.name, workdir, os.path.join(workdir, SPLIT_DIR))
    record = {key: value for key, value in saved.items() if key not in ("lists", "num_train", "num_eval")}
    how = (f"{saved['val_fraction']:.0%} of {full.name} held out" + (", stratified by class" if saved["stratified"]
           else "") + f", seed {saved['seed']}; the split saved in {os.path.join(workdir, SPLIT_DIR)}")
    return Split(full.subset(parts[0]), full.subset(parts[1]), "held-out val", how, record,
                 tuple(saved["lists"]))
