"""tf.data input pipelines for MAE pretraining and evaluation, on every Keras backend.

Typical use:

    train = make_pretrain_dataset("fashion_mnist", image_size=28, batch_size=256)
    test = make_eval_dataset("/data/imagenet/val", image_size=224, batch_size=256)
"""

from keras_mae.data.augment import random_flip, random_resized_crop, resize_center_crop
from keras_mae.data.autotune import without_autotune
from keras_mae.data.base import Source
from keras_mae.data.builtin import BUILTIN_NAMES, DATASET_STATS, read_idx
from keras_mae.data.image_files import find_images, read_images
from keras_mae.data.image_folder import IMAGE_EXTENSIONS, read_image
from keras_mae.data.normalization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    fit_normalization,
    normalize,
    to_uint8,
)
from keras_mae.data.pipeline import make_eval_dataset, make_pretrain_dataset
from keras_mae.data.sources import load_source
from keras_mae.data.splits import Split, fixed_subset, save_split, split_dataset
