"""Fine-tuning: layer-wise lr decay, weight-decay exclusions, mixup / cutmix / erasing, and the apps end to end."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mae import ViTClassifier
from keras_mae.data.classification import make_classification_dataset, random_erasing
from keras_mae.data.mix import mix_batch, smooth_one_hot
from keras_mae.optimizers.finetune_optimizer import make_finetune_optimizer
from tests.run_app import backend_independent, run_app

NUM_LAYERS = 3


def tiny_classifier():
    keras.utils.set_random_seed(0)
    return ViTClassifier(8, 4, 1, hidden_dim=8, num_layers=NUM_LAYERS, num_heads=2, mlp_dim=16, num_classes=3)


def expected_layer_id(path):
    """Official get_layer_id_for_vit, written out for our variable paths."""
    if any(part in path for part in ("cls_token", "pos_embed", "patch_embed")):
        return 0
    if "/blocks_" in path:
        return int(path.split("/blocks_")[1].split("/")[0]) + 1
    return NUM_LAYERS + 1


def test_lr_multipliers_follow_layer_decay_and_scale_each_step():
    model = tiny_classifier()
    optimizer = make_finetune_optimizer(model, learning_rate=0.01, weight_decay=0.0, layer_decay=0.75)
    variables = model.trainable_variables
    for variable in variables:
        layer_id = expected_layer_id(variable.path)
        assert model.layer_id(variable.path) == layer_id, variable.path
        assert optimizer.lr_multipliers[variable.path] == pytest.approx(0.75 ** (NUM_LAYERS + 1 - layer_id))
    assert optimizer.lr_multipliers["head/kernel"] == 1.0
    assert optimizer.lr_multipliers["encoder/patch_embed/projection/kernel"] == pytest.approx(0.75**4)
    # Adam's first step moves every weight by ~lr * multiplier.
    before = [keras.ops.convert_to_numpy(v).copy() for v in variables]
    optimizer.apply([keras.ops.ones(v.shape) for v in variables], variables)
    for old, variable in zip(before, variables):
        step = np.abs(old - keras.ops.convert_to_numpy(variable))
        np.testing.assert_allclose(step, 0.01 * optimizer.lr_multipliers[variable.path], rtol=1e-3, err_msg=variable.path)


def test_weight_decay_skips_biases_norms_and_tokens():
    model = tiny_classifier()
    optimizer = make_finetune_optimizer(model, learning_rate=0.1, weight_decay=0.5, layer_decay=1.0)
    variables = model.trainable_variables
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in variables}
    optimizer.apply([keras.ops.zeros(v.shape) for v in variables], variables)  # zero gradients: decay alone
    for variable in variables:
        decayed = not np.allclose(before[variable.path], keras.ops.convert_to_numpy(variable))
        should = len(variable.shape) > 1 and "cls_token" not in variable.path
        assert decayed == should, variable.path


def test_mixup_and_cutmix_targets_sum_to_one_and_match_the_pixels():
    n, classes = 4, 5
    images = tf.constant(np.arange(1, n + 1, dtype="float32")[:, None, None, None] * np.ones((n, 8, 8, 1), "float32"))
    labels = tf.constant([0, 1, 2, 3])
    kinds = set()
    for seed in range(40):
        mixed, targets = mix_batch(images, labels, tf.constant([seed, 7]), classes, label_smoothing=0.0)
        mixed, targets = mixed.numpy(), targets.numpy()
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
        lam = targets[0, 0]  # row 0 is class 0 mixed with the reversed row, class 3
        np.testing.assert_allclose(targets[0, 3], 1 - lam, atol=1e-6)
        if np.all(np.isin(mixed[0], [1.0, 4.0])) and not np.allclose(mixed[0], mixed[0].mean()):
            kinds.add("cutmix")  # pixels pasted from image 4: their share is exactly 1 - lam
            np.testing.assert_allclose(np.mean(mixed[0] == 4.0), 1 - lam, atol=1e-6)
        else:
            kinds.add("mixup")
            np.testing.assert_allclose(mixed[0], lam * 1.0 + (1 - lam) * 4.0, atol=1e-5)
    assert kinds == {"cutmix", "mixup"}  # switch_prob 0.5
    # Label smoothing alone, as timm: 1 - s + s / n on the class, s / n elsewhere; rows still sum to 1.
    _, targets = mix_batch(images, labels, tf.constant([0, 0]), classes, mixup_alpha=0.0, cutmix_alpha=0.0)
    np.testing.assert_allclose(targets.numpy(), smooth_one_hot(labels, classes, 0.1).numpy())
    np.testing.assert_allclose(targets.numpy()[0], [0.92, 0.02, 0.02, 0.02, 0.02], atol=1e-6)


def test_random_erasing_rate_and_box():
    image = tf.zeros((16, 16, 1))
    erased = [random_erasing(image, tf.constant([seed, 1]), probability=0.25).numpy()[..., 0] != 0 for seed in range(200)]
    rate = np.mean([e.any() for e in erased])
    assert 0.15 < rate < 0.35
    for mask in (e for e in erased if e.any()):
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == mask.sum() and box < 16 * 16  # one filled rectangle, strictly smaller than the image


def test_training_batches_have_soft_targets_and_are_reproducible():
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 255, (32, 10, 10)).astype("uint8"), rng.integers(0, 3, 32))
    make = lambda: make_classification_dataset(  # noqa: E731
        data, 8, 8, seed=3, random_erasing_prob=0.25, num_classes=3, mixup_alpha=0.8, cutmix_alpha=1.0,
        label_smoothing=0.1)
    images, targets = next(iter(make()))
    assert images.shape == (8, 8, 8, 1) and targets.shape == (8, 3)
    np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, atol=1e-6)
    again, _ = next(iter(make()))
    np.testing.assert_array_equal(images.numpy(), again.numpy())


def run_quiet(script, *args, verbose=0):
    return run_app(script, *args, f"--verbose={verbose}").stdout


@pytest.mark.slow
@backend_independent  # the apps' flow; the kNN monitor and fine-tuning's parts run in-process on every backend
def test_pretrain_with_knn_then_finetune(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 48)
    images = np.clip(rng.normal(size=(48, 16, 16)) * 20 + 60 + labels[:, None, None] * 60, 0, 255).astype("uint8")
    np.savez(tmp_path / "data.npz", x=images, y=labels)
    pretrain_dir = tmp_path / "pretrain"
    stdout = run_quiet(
        "pretrain.py", f"--dataset={tmp_path / 'data.npz'}", f"--workdir={pretrain_dir}", "--image_size=16",
        "--patch_size=4", "--hidden_dim=16", "--num_layers=1", "--num_heads=2", "--mlp_dim=32",
        "--decoder_hidden_dim=16", "--decoder_num_layers=1", "--decoder_num_heads=2", "--decoder_mlp_dim=32",
        "--epochs=1", "--warmup_epochs=0", "--batch_size=16", "--knn_every=1", "--num_reconstructions=2", verbose=2)
    knn_top1 = float(stdout.split("knn_top1: ")[1].split()[0])  # 48 images: 10,000 / 2,000 subsets are all of them
    assert 0.0 <= knn_top1 <= 1.0
    assert os.listdir(pretrain_dir / "tensorboard" / "knn")  # the scalar's event file

    finetune_dir = tmp_path / "finetune"
    stdout = run_quiet("finetune.py", f"--encoder={pretrain_dir}", f"--workdir={finetune_dir}", "--epochs=2",
                     "--warmup_epochs=1", "--batch_size=16", "--steps_per_epoch=2", "--eval_batch_size=48", "--eval_every=0")
    # The pretraining held out 5 of the 48 images (10%, stratified); fine-tuning reuses that split.
    assert "Fine-tune top-1 on" in stdout and "held-out val (5 images)" in stdout
    record = json.loads((finetune_dir / "finetune.json").read_text())
    assert (record["num_train"], record["num_eval"]) == (43, 5) and 0.0 <= record["top1"] <= record["top5"] <= 1.0
    for name in ("train.txt", "eval.txt"):
        assert (finetune_dir / "splits" / name).read_text() == (pretrain_dir / "splits" / name).read_text()
    model = keras.saving.load_model(finetune_dir / "classifier.keras", compile=False)
    assert isinstance(model, ViTClassifier) and model.num_classes == 3 and model.drop_path_rate == 0.1
