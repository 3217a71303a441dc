"""Data parallelism's input: the processes' shards of every pipeline stack up to one process's global batches."""

import numpy as np
import pytest

from keras_mae import data
from keras_mae.data.classification import make_classification_dataset
from keras_mae.data.sharding import rows_of
from tests.run_app import backend_independent

pytestmark = backend_independent  # tf.data only

IMAGES = (np.arange(42 * 12 * 12).reshape(42, 12, 12) % 251).astype(np.uint8)
LABELS = np.arange(42) % 3


def _stacked(parts):
    return np.concatenate([np.asarray(part) for part in parts])


@pytest.mark.parametrize("count", [2, 4])
def test_pretraining_shards_are_the_rows_of_each_global_batch_with_its_crops(count):
    kwargs = dict(seed=3, steps_per_epoch=4, initial_epoch=1, initial_step=1)
    whole = list(data.make_pretrain_dataset(IMAGES, 8, 8, **kwargs).take(7))  # into the next epoch
    shards = [list(data.make_pretrain_dataset(IMAGES, 8, 8, **kwargs, shard=(i, count)).take(7)) for i in range(count)]
    for step, batch in enumerate(whole):
        assert all(shard[step].shape[0] == 8 // count for shard in shards)
        np.testing.assert_array_equal(_stacked(shard[step] for shard in shards), batch)


def test_classification_shards_are_the_rows_of_each_global_batch():
    source = data.load_source((IMAGES, LABELS))
    whole = list(make_classification_dataset(source, 8, 8, seed=1).take(4))
    shards = [list(make_classification_dataset(source, 8, 8, seed=1, shard=(i, 2)).take(4)) for i in range(2)]
    for step, (images, labels) in enumerate(whole):
        np.testing.assert_array_equal(_stacked(shard[step][0] for shard in shards), images)
        np.testing.assert_array_equal(_stacked(shard[step][1] for shard in shards), labels)


@pytest.mark.parametrize("num_examples", [40, 42, 37, 3])
def test_evaluation_shards_cover_every_image_once_also_in_a_partial_last_batch(num_examples):
    source = data.load_source((IMAGES[:num_examples], LABELS[:num_examples])).relabel(np.arange(num_examples))
    shards = [list(data.make_eval_dataset(source, 8, 8, shard=(i, 2))) for i in range(2)]
    ids = [_stacked(labels for _, labels in shard) if shard else np.zeros(0, np.int64) for shard in shards]
    assert [len(part) for part in ids] == [rows_of(num_examples, i, 2, 8) for i in range(2)]
    assert sorted(np.concatenate(ids).tolist()) == list(range(num_examples))
    whole = np.concatenate([images for images, _ in data.make_eval_dataset(source, 8, 8)])
    for part, shard in zip(ids, shards):
        if shard:
            np.testing.assert_array_equal(_stacked(images for images, _ in shard), whole[part])


def test_bad_shards_are_one_line_errors():
    with pytest.raises(ValueError, match="must be divisible by the 3 processes"):
        data.make_pretrain_dataset(IMAGES, 8, 8, steps_per_epoch=2, shard=(0, 3))
    with pytest.raises(ValueError, match=r"0 <= index < count. Received: shard=\(2, 2\)"):
        data.make_eval_dataset(IMAGES, 8, 8, shard=(2, 2))
    with pytest.raises(ValueError, match="shard need steps_per_epoch"):
        data.make_pretrain_dataset(IMAGES, 8, 8, shard=(0, 2))
