"""Train / evaluation splits: every layout gives disjoint parts, held-out splits are stratified, deterministic,
saved and reused, and overlapping or missing evaluation data is refused."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_mae import data


def _save(path, value=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path)


def class_folder(root, counts):
    """root/<class>/<i>.png for each class and count; returns root."""
    for name, count in counts.items():
        for i in range(count):
            _save(os.path.join(root, name, f"{i:03d}.png"), i)
    return str(root)


def real(files):
    return {os.path.realpath(f) for f in files}


def test_imagenet_layout_gives_disjoint_train_and_val(tmp_path):
    class_folder(tmp_path / "train", {"cat": 5, "dog": 4})
    class_folder(tmp_path / "val", {"cat": 2, "dog": 1})
    class_folder(tmp_path / "test", {"cat": 3})
    split = data.split_dataset(str(tmp_path))
    assert (split.train.num_examples, split.eval.num_examples, split.eval_name) == (9, 3, "val")
    assert split.train.class_names == split.eval.class_names == ("cat", "dog")
    assert list(split.eval.labels) == [0, 0, 1]
    assert not real(split.train.files) & real(split.eval.files)
    assert all("/val/" in f for f in split.eval.files)
    # --eval_split picks the other folder; its single class keeps the training index.
    test = data.split_dataset(str(tmp_path), eval_split="test")
    assert (test.eval_name, test.eval.num_examples, set(test.eval.labels)) == ("test", 3, {0})
    with pytest.raises(ValueError, match="No validation/ folder under .*pass --eval_split=val or test"):
        data.split_dataset(str(tmp_path), eval_split="validation")


def test_tiny_imagenet_val_is_labelled_by_its_annotations(tmp_path):
    for wnid in ("n01", "n02"):
        for i in range(3):
            _save(str(tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"), i)
        (tmp_path / "train" / wnid / f"{wnid}_boxes.txt").write_text("not an image\n")
    rows = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n01"), ("val_2.JPEG", "n02")]
    for name, _ in rows:
        _save(str(tmp_path / "val" / "images" / name))
    (tmp_path / "val" / "val_annotations.txt").write_text("".join(f"{n}\t{w}\t0\t0\t5\t5\n" for n, w in rows))
    split = data.split_dataset(str(tmp_path))
    assert split.train.class_names == ("n01", "n02") and split.train.num_examples == 6
    assert [os.path.basename(f) for f in split.eval.files] == ["val_0.JPEG", "val_1.JPEG", "val_2.JPEG"]
    assert list(split.eval.labels) == [1, 0, 1]  # not one class named "images"
    assert not real(split.train.files) & real(split.eval.files)
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t5\t5\n")
    with pytest.raises(ValueError, match="line 1 names no class of train/"):
        data.split_dataset(str(tmp_path))


def test_single_folder_split_is_stratified_deterministic_and_disjoint(tmp_path):
    root = class_folder(tmp_path / "photos", {"a": 30, "b": 10, "c": 20})
    split = data.split_dataset(root, val_fraction=0.2, seed=3)
    assert split.eval_name == "held-out val" and split.record["stratified"]
    assert split.train.num_examples + split.eval.num_examples == 60
    assert not real(split.train.files) & real(split.eval.files)
    assert np.bincount(split.eval.labels).tolist() == [6, 2, 4]  # 20% of each class
    again = data.split_dataset(root, val_fraction=0.2, seed=3)
    assert again.eval.files == split.eval.files
    other = data.split_dataset(root, val_fraction=0.2, seed=4)
    assert other.eval.files != split.eval.files
    # No evaluation split of its own: 10% held out by default.
    default = data.split_dataset(root)
    assert default.eval.num_examples == 6 and np.bincount(default.eval.labels).tolist() == [3, 1, 2]


def test_saved_split_is_reused_on_resume_and_by_later_apps(tmp_path):
    root = class_folder(tmp_path / "photos", {"a": 12, "b": 8})
    split = data.split_dataset(root, seed=1)
    data.save_split(split, str(tmp_path / "pretrain"))
    record = json.loads((tmp_path / "pretrain" / "splits" / "split.json").read_text())
    assert record["kind"] == "held_out" and (record["num_train"], record["num_eval"]) == (18, 2)
    listed = (tmp_path / "pretrain" / "splits" / "eval.txt").read_text().split()
    assert listed == [os.path.relpath(f, root) for f in split.eval.files]
    # Images added since are left out, and another seed does not change the saved split.
    _save(os.path.join(root, "a", "new.png"))
    reused = data.split_dataset(root, seed=7, saved=[str(tmp_path / "probe"), str(tmp_path / "pretrain")])
    assert reused.eval.files == split.eval.files and reused.train.files == split.train.files
    assert "the split saved in" in reused.how
    with pytest.raises(ValueError, match="holds out 0.1 .* --val_fraction=0.3 differs"):
        data.split_dataset(root, val_fraction=0.3, saved=[str(tmp_path / "pretrain")])
    # Other data (an explicit evaluation folder) does not pick up the saved split.
    other = class_folder(tmp_path / "other", {"a": 2, "b": 2})
    explicit = data.split_dataset(root, eval_dataset=other, saved=[str(tmp_path / "pretrain")])
    assert explicit.eval_name == "eval_dataset" and explicit.train.num_examples == 21


def test_explicit_eval_dataset_overlapping_the_training_files_is_refused(tmp_path):
    root = class_folder(tmp_path / "labelled", {"a": 4, "b": 4})
    with pytest.raises(ValueError, match=r"overlap the training images: 4 of the 4 files of .* \(.*a/000.png"):
        data.split_dataset(root, eval_dataset=os.path.join(root, "a"))
    os.symlink(root, tmp_path / "link")  # the same files under another name
    with pytest.raises(ValueError, match="8 of the 8 files"):
        data.split_dataset(root, eval_dataset=str(tmp_path / "link"))
    with pytest.raises(ValueError, match="not both"):
        data.split_dataset(root, eval_dataset=str(tmp_path / "link"), val_fraction=0.1)
    # The three-way layout: unlabelled images to pretrain, a labelled train folder, a labelled test folder.
    test = class_folder(tmp_path / "test", {"b": 1, "a": 2})
    split = data.split_dataset(root, eval_dataset=test)
    assert (split.train.num_examples, split.eval.num_examples) == (8, 3) and list(split.eval.labels) == [0, 0, 1]
    unknown = class_folder(tmp_path / "unknown", {"zebra": 1})
    with pytest.raises(ValueError, match="classes the training data lacks: zebra"):
        data.split_dataset(root, eval_dataset=unknown)


def test_arrays_npz_and_builtin_data(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), np.repeat([0, 1], 20)
    np.savez(tmp_path / "one.npz", x=images, y=labels)
    split = data.split_dataset(str(tmp_path / "one.npz"))
    assert (split.train.num_examples, split.eval.num_examples) == (36, 4)
    assert np.bincount(split.eval.labels).tolist() == [2, 2]
    train_ids, eval_ids = split.held_out
    assert not set(train_ids) & set(eval_ids) and len(set(train_ids) | set(eval_ids)) == 40
    got = np.stack([np.asarray(image) for image, _ in split.eval.dataset])[..., 0]
    np.testing.assert_array_equal(got, images[[int(i) for i in eval_ids]])
    with pytest.raises(ValueError, match="are the training images"):
        data.split_dataset(str(tmp_path / "one.npz"), eval_dataset=str(tmp_path / "one.npz"))
    np.savez(tmp_path / "keras.npz", x_train=images, y_train=labels, x_test=images[:6], y_test=labels[:6])
    keras_style = data.split_dataset(str(tmp_path / "keras.npz"))
    assert (keras_style.eval_name, keras_style.eval.num_examples) == ("test", 6)
    builtin = data.split_dataset("fashion_mnist") if os.path.isdir("/usr/share/datasets/fashion-mnist") else None
    if builtin is not None:
        assert (builtin.train.num_examples, builtin.eval.num_examples, builtin.eval_name) == (60000, 10000, "test")
        assert builtin.eval.class_names[6] == "Shirt"


def test_no_evaluation_split_says_so(tmp_path):
    root = class_folder(tmp_path / "photos", {"a": 5, "b": 5})
    split = data.split_dataset(root, val_fraction=0)
    assert split.eval is None and "no evaluation split" in split.describe()
    with pytest.raises(ValueError, match="needs an evaluation split .* pass --eval_dataset=PATH or --val_fraction"):
        split.require_labelled_eval("Linear probing")
    unlabelled = tmp_path / "flat"
    for i in range(10):
        _save(str(unlabelled / f"{i}.png"), i)
    flat = data.split_dataset(str(unlabelled))
    assert flat.eval.num_examples == 1 and not flat.record["stratified"]
    with pytest.raises(ValueError, match="needs labels"):
        flat.require_labelled_eval("Linear probing")
    with pytest.raises(ValueError, match="Class 'b' of .* has 1 image; .* add images to that class folder"):
        data.split_dataset(class_folder(tmp_path / "tiny", {"a": 5, "b": 1}), val_fraction=0.5)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        data.split_dataset(root, val_fraction=1.5)


def test_fixed_subset_is_fixed_and_balanced_spreads_over_classes(tmp_path):
    root = class_folder(tmp_path / "photos", {"a": 20, "b": 3, "c": 5})
    source = data.load_source(root)
    balanced = data.fixed_subset(source, 6, seed=0, balanced=True)
    assert sorted(balanced.labels[:3]) == [0, 1, 2] and sorted(balanced.labels[3:]) == [0, 1, 2]
    assert data.fixed_subset(source, 6, seed=0, balanced=True).files == balanced.files
    plain = data.fixed_subset(source, 10, seed=0)
    assert plain.num_examples == 10 and len(set(plain.files)) == 10
    assert data.fixed_subset(source, 100) is source
