"""Writes a screening-style binary task from Fashion-MNIST as a folder in the ImageNet layout.

    python apps/make_screening_folder.py --output=runs/screening/data

Shirt against T-shirt/top, the pair Fashion-MNIST classifiers confuse most: the 12,000 training images of the two
classes go to OUTPUT/train/{shirt,t_shirt_top}/, their 2,000 test images to OUTPUT/val/{shirt,t_shirt_top}/, as PNGs.
The apps then read it as any user's folder: `--dataset=OUTPUT` trains on train/ and evaluates on val/.
"""

import os

import numpy as np
from absl import app, flags
from PIL import Image

import common

flags.DEFINE_string("output", None, "Folder to write (train/ and val/ inside).", required=True)
flags.DEFINE_integer("max_per_class", None, "Keep at most this many images per class and split (smoke runs).")
FLAGS = flags.FLAGS

CLASSES = {"shirt": 6, "t_shirt_top": 0}  # folder name -> Fashion-MNIST label


def main(argv):
    from keras_mae.data.builtin import load_arrays

    common.check_workdir(FLAGS.output)
    for split, folder in (("train", "train"), ("test", "val")):
        images, labels = load_arrays("fashion_mnist", split)
        for name, label in CLASSES.items():
            directory = os.path.join(FLAGS.output, folder, name)
            os.makedirs(directory, exist_ok=True)
            indices = np.flatnonzero(labels == label)[: FLAGS.max_per_class]
            for index in indices:
                path = os.path.join(directory, f"{split}_{index:05d}.png")
                if not os.path.exists(path):  # rerunning writes only what is missing
                    Image.fromarray(images[index]).save(path)
            print(f"{directory}: {len(indices)} images")


if __name__ == "__main__":
    app.run(common.run_main(main))
