"""The layouts of image folders that carry their own train / evaluation split.

- ImageNet: `root/train/<class>/...` and `root/val/<class>/...` (or `validation/`, `test/`).
- Tiny-ImageNet: `root/train/<wnid>/images/*.JPEG`, and `root/val/images/*.JPEG` labelled by
  `root/val/val_annotations.txt` (file name, wnid, box; tab-separated).
- Anything else is a single folder: class subfolders optional, no evaluation split of its own.
"""

import os

import numpy as np

from keras_mae.data.image_folder import IMAGE_EXTENSIONS, list_image_files, source_from_files

EVAL_FOLDERS = ("val", "validation", "test")
TINY_IMAGENET_ANNOTATIONS = os.path.join("val", "val_annotations.txt")


def folder_layout(root):
    """Which layout `root` has: "tiny_imagenet", "imagenet", "train_only" or "single"."""
    if not os.path.isdir(os.path.join(root, "train")):
        return "single"
    if os.path.isfile(os.path.join(root, TINY_IMAGENET_ANNOTATIONS)):
        return "tiny_imagenet"
    if any(os.path.isdir(os.path.join(root, name)) for name in EVAL_FOLDERS):
        return "imagenet"
    return "train_only"


def eval_folder_name(root, eval_split=None):
    """The evaluation subfolder of an ImageNet-layout `root`: `eval_split`, else the first of EVAL_FOLDERS."""
    if eval_split is not None:
        if not os.path.isdir(os.path.join(root, eval_split)):
            present = [name for name in EVAL_FOLDERS if os.path.isdir(os.path.join(root, name))]
            raise ValueError(f"No {eval_split}/ folder under '{root}' (it has {', '.join(present) or 'none'}/); "
                             f"pass --eval_split={' or '.join(present) or 'val'}.")
        return eval_split
    return next(name for name in EVAL_FOLDERS if os.path.isdir(os.path.join(root, name)))


def _images_of(path, what):
    files, labels, classes = list_image_files(path)
    if not files:
        raise ValueError(f"No images found under '{path}' ({what}; looked for {', '.join(IMAGE_EXTENSIONS)}).")
    return files, labels, classes


def load_train_folder(root, num_channels=None, full_check=None):
    """`root/train` as a `Source`: labels index its sorted class subfolders."""
    path = os.path.join(root, "train")
    files, labels, classes = _images_of(path, "the training images")
    return source_from_files(path, files, labels, classes, num_channels, full_check)


def load_eval_folder(root, class_names, eval_split=None, num_channels=None, full_check=None):
    """The evaluation images of an ImageNet or Tiny-ImageNet `root`, labelled in the training classes.

    Args:
        root: str. The dataset folder.
        class_names: tuple of str. The training classes; evaluation labels index these.
        eval_split: str or None. Subfolder (ImageNet layout); None picks val/, validation/ or test/.
        num_channels, full_check: see `source_from_files`.

    Returns:
        `(Source, subfolder name)`.
    """
    if folder_layout(root) == "tiny_imagenet":
        return _tiny_imagenet_val(root, class_names, num_channels, full_check), "val"
    name = eval_folder_name(root, eval_split)
    path = os.path.join(root, name)
    files, labels, classes = _images_of(path, f"the {name} images")
    index = {c: i for i, c in enumerate(class_names or ())}
    unknown = sorted(set(classes) - set(index))
    if unknown:
        raise ValueError(f"{path} has class folders that train/ lacks: {', '.join(unknown[:5])}"
                         f"{' ...' if len(unknown) > 5 else ''}; give both the same class folders.")
    mapped = [index[classes[label]] if label >= 0 else -1 for label in labels]
    return source_from_files(path, files, mapped, class_names if classes else (), num_channels, full_check), name


def _tiny_imagenet_val(root, class_names, num_channels, full_check):
    """val/images/* labelled by val/val_annotations.txt (Tiny-ImageNet)."""
    annotations = os.path.join(root, TINY_IMAGENET_ANNOTATIONS)
    index = {c: i for i, c in enumerate(class_names or ())}
    files, labels = [], []
    with open(annotations) as f:
        for number, line in enumerate(f, 1):
            fields = line.strip().split("\t")
            if not fields or not fields[0]:
                continue
            if len(fields) < 2 or fields[1] not in index:
                raise ValueError(f"{annotations} line {number} names no class of train/: {line.strip()[:80]!r}.")
            path = os.path.join(root, "val", "images", fields[0])
            if os.path.isfile(path):
                files.append(path)
                labels.append(index[fields[1]])
    if not files:
        raise ValueError(f"None of the files listed in {annotations} are under {os.path.join(root, 'val', 'images')}.")
    order = np.argsort(files, kind="stable")  # the order of a folder listing
    files, labels = [files[i] for i in order], [labels[i] for i in order]
    return source_from_files(os.path.join(root, "val"), files, labels, class_names, num_channels, full_check)
