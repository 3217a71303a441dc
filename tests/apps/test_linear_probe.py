"""Linear probe: frozen encoder, official head, cached features == in-graph features, encoder loading, the app."""

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mae import MaskedAutoencoder, ViTEncoder
from keras_mae.models.linear_probe import LinearProbe
from keras_mae.optimizers import LARS
from tests.run_app import APPS, backend_independent, run_app

ENCODER = dict(image_size=16, patch_size=4, num_channels=1, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
DECODER = dict(decoder_hidden_dim=16, decoder_num_layers=1, decoder_num_heads=2, decoder_mlp_dim=32)


def tiny_probe(pool="cls", num_classes=4):
    keras.utils.set_random_seed(0)
    return LinearProbe(ViTEncoder(**ENCODER), num_classes, pool=pool)


def labelled_images(n=32, num_classes=4, seed=0):
    """Images whose brightness tells the class: a probe can learn them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    images = rng.normal(size=(n, 16, 16, 1)).astype("float32") * 0.3 + labels[:, None, None, None] - 1.5
    return images.astype("float32"), labels.astype("int32")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_head_init_config_and_trainable_weights():
    probe = tiny_probe()
    assert [w.path for w in probe.trainable_weights] == ["head/kernel", "head/bias"]
    norm = probe.head_norm
    assert (norm.center, norm.scale, norm.epsilon, norm.momentum) == (False, False, 1e-6, 0.9)
    assert [w.name for w in norm.weights] == ["moving_mean", "moving_variance"]
    kernel = numpy(probe.head.kernel)
    assert np.all(np.abs(kernel) <= 0.02 + 1e-7) and 0.004 < kernel.std() < 0.012  # trunc_normal(std=0.01)
    np.testing.assert_array_equal(numpy(probe.head.bias), 0.0)
    config = probe.get_config()
    assert {"encoder", "num_classes", "pool"} <= set(config)
    assert LinearProbe.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="pool"):
        LinearProbe(ViTEncoder(**ENCODER), 3, pool="max")
    with pytest.raises(ValueError, match="num_classes"):
        LinearProbe(ViTEncoder(**ENCODER), 0)


def test_fit_changes_only_the_head():
    probe = tiny_probe()
    images, labels = labelled_images()
    encoder_before = [numpy(w).copy() for w in probe.encoder.weights]
    head_before = {w.path: numpy(w).copy() for w in probe.head_norm.weights + probe.head.weights}
    probe.compile(optimizer=LARS(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    for before, after in zip(encoder_before, probe.encoder.weights):
        np.testing.assert_array_equal(before, numpy(after), err_msg=after.path)
    for weight in probe.head_norm.weights + probe.head.weights:  # moving stats and the head both move
        assert not np.allclose(head_before[weight.path], numpy(weight)), weight.path


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_cached_features_equal_the_in_graph_path(pool):
    probe = tiny_probe(pool)
    images, labels = labelled_images(20)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)  # a last, smaller batch
    features, cached_labels = probe.extract_features(dataset, verbose=0)
    assert features.shape == (20, 16) and features.dtype == np.float32
    np.testing.assert_array_equal(cached_labels, labels)
    np.testing.assert_allclose(features, numpy(probe.features(images)), atol=1e-5)
    np.testing.assert_allclose(numpy(probe.head_model()(features)), numpy(probe(images)), atol=1e-5)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_bfloat16_features_track_float32_ones_and_leave_the_encoder_alone(pool):
    probe = tiny_probe(pool)
    images, labels = labelled_images(20)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    weights = [numpy(w).copy() for w in probe.encoder.weights]
    exact, _ = probe.extract_features(dataset, verbose=0)
    same, _ = probe.extract_features(dataset, verbose=0, dtype_policy="float32")  # the encoder's own: no twin
    np.testing.assert_array_equal(same, exact)
    bf16, bf16_labels = probe.extract_features(dataset, verbose=0, dtype_policy="mixed_bfloat16")
    np.testing.assert_array_equal(bf16_labels, labels)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, exact)  # it really ran in bf16
    cosine = (bf16 * exact).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(exact, axis=1)
    assert cosine.min() > 0.999, cosine.min()
    assert probe.encoder.compute_dtype == "float32"
    for before, after in zip(weights, probe.encoder.weights):
        np.testing.assert_array_equal(before, numpy(after))


def test_encoder_twin_in_another_policy():
    keras.utils.set_random_seed(0)
    encoder = ViTEncoder(**ENCODER)
    twin = encoder.with_dtype_policy("mixed_bfloat16")
    assert twin.compute_dtype == "bfloat16" and twin.get_config()["hidden_dim"] == 16
    for ours, theirs in zip(encoder.weights, twin.weights):
        assert ours.path.split("/")[-1] == theirs.path.split("/")[-1]
        np.testing.assert_array_equal(numpy(ours), numpy(theirs))
    images, _ = labelled_images(4)
    np.testing.assert_allclose(numpy(twin(images)).astype("float32"), numpy(encoder(images)), atol=0.1)
    with pytest.raises(ValueError, match="variables' dtype"):
        encoder.with_dtype_policy("bfloat16")


def test_features_are_the_official_cls_and_global_pool():
    probe = tiny_probe("mean")
    images, _ = labelled_images(4)
    tokens = numpy(probe.encoder(images, final_norm=False))
    pooled = tokens[:, 1:].mean(axis=1)  # official global_pool: fresh (identity) fc_norm of the mean
    expected = (pooled - pooled.mean(-1, keepdims=True)) / np.sqrt(pooled.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(numpy(probe.features(images)), expected, atol=1e-4)
    cls = LinearProbe(probe.encoder, 4, pool="cls")
    np.testing.assert_allclose(numpy(cls.features(images)), numpy(probe.encoder(images))[:, 0], atol=1e-6)


def test_keras_save_load_keeps_outputs_and_freezing(tmp_path):
    probe = tiny_probe()
    images, _ = labelled_images(4)
    probe.save(tmp_path / "probe.keras")
    loaded = keras.saving.load_model(tmp_path / "probe.keras")
    assert isinstance(loaded, LinearProbe) and not loaded.encoder.trainable
    assert len(loaded.trainable_weights) == 2
    np.testing.assert_allclose(numpy(loaded(images)), numpy(probe(images)), atol=1e-6)


def pretraining_workdir(path, with_encoder_keras=True):
    """What apps/pretrain.py leaves, without running it: run.json, model/encoder files, a labelled .npz."""
    images, labels = labelled_images(64)
    pixels = np.clip((images[..., 0] + 3) * 40, 0, 255).astype("uint8")
    np.savez(path / "data.npz", x=pixels, y=labels)
    workdir = path / "pretrain"
    os.makedirs(workdir / "checkpoints")
    keras.utils.set_random_seed(1)
    model = MaskedAutoencoder(**ENCODER, **DECODER)
    run = {"model_config": model.get_config(), "dataset": str(path / "data.npz"), "mean": [0.5], "std": [0.25]}
    (workdir / "run.json").write_text(json.dumps(run))
    if with_encoder_keras:
        model.encoder.save(workdir / "encoder.keras")
    model.save(workdir / "model.keras")
    return model, workdir


def test_load_encoder_from_every_source(tmp_path):
    sys.path.insert(0, APPS)
    import downstream

    from keras_mae.callbacks import EpochCheckpoint

    model, workdir = pretraining_workdir(tmp_path)
    images, _ = labelled_images(2)
    expected = numpy(model.encoder(images))
    sources = {
        "workdir": str(workdir),
        "mae .keras": str(workdir / "model.keras"),
        "encoder .keras": str(workdir / "encoder.keras"),
    }
    for name, spec in sources.items():
        encoder, info = downstream.load_encoder(spec)
        np.testing.assert_allclose(numpy(encoder(images)), expected, atol=1e-6, err_msg=name)
    assert info["mean"] == [0.5] and info["dataset"].endswith("data.npz")
    # A workdir without encoder.keras (pretraining still running): its latest checkpoint.
    os.remove(workdir / "encoder.keras")
    model.compile(optimizer="adam")
    model.optimizer.build(model.trainable_variables)
    checkpoint = EpochCheckpoint(str(workdir / "checkpoints"))
    checkpoint.set_model(model)
    checkpoint.save(3)
    encoder, info = downstream.load_encoder(str(workdir))
    assert "epoch 3" in info["source"]
    np.testing.assert_allclose(numpy(encoder(images)), expected, atol=1e-6)
    # Bare weights need a preset.
    preset_encoder = ViTEncoder.from_preset("mae_vit_tiny_patch4_28")
    preset_encoder.save_weights(tmp_path / "encoder.weights.h5")
    with pytest.raises(downstream.common.UserError, match="--preset"):
        downstream.load_encoder(str(tmp_path / "encoder.weights.h5"))
    encoder, _ = downstream.load_encoder(str(tmp_path / "encoder.weights.h5"), preset="mae_vit_tiny_patch4_28")
    np.testing.assert_array_equal(numpy(encoder.cls_token), numpy(preset_encoder.cls_token))


@backend_independent  # the app's flags, splits, resume; the probe on every backend: the in-process tests
@pytest.mark.slow
def test_app_cached_features_with_random_init_comparison(tmp_path):
    _, workdir = pretraining_workdir(tmp_path)
    probe_dir = tmp_path / "probe"
    args = [f"--encoder={workdir}", f"--workdir={probe_dir}", "--cache_features", "--compare_random_init",
            "--epochs=3", "--warmup_epochs=1", "--batch_size=16", "--verbose=0"]
    result = run_app("linear_probe.py", *args)
    # 64 labelled images and no evaluation split of their own: 10% held out, stratified, never trained on.
    assert "Linear probe top-1 on" in result.stdout and "held-out val (7 images)" in result.stdout
    assert "| random init" in result.stdout
    record = json.loads((probe_dir / "linear_probe.json").read_text())
    assert (record["num_train"], record["num_eval"], record["eval_split"]) == (57, 7, "held-out val")
    assert record["cache_features"]
    eval_ids = (probe_dir / "splits" / "eval.txt").read_text().split()
    train_ids = (probe_dir / "splits" / "train.txt").read_text().split()
    assert len(eval_ids) == 7 and len(train_ids) == 57 and not set(eval_ids) & set(train_ids)
    for run in ("pretrained", "random_init"):
        assert 0.0 <= record[run]["top1"] <= record[run]["top5"] <= 1.0
    assert (probe_dir / "random_init" / "features.npz").exists()
    loaded = keras.saving.load_model(probe_dir / "probe.keras")
    assert isinstance(loaded, LinearProbe) and loaded.num_classes == 4
    # Rerun after the encoder changed: the pretrained probe starts afresh, the random-init one resumes.
    stamp = os.path.getmtime(workdir / "encoder.keras") + 10
    os.utime(workdir / "encoder.keras", (stamp, stamp))
    rerun = run_app("linear_probe.py", *args)
    assert "starting afresh" in rerun.stdout and "Resuming random_probe from epoch 3" in rerun.stdout
    # A user error is one line and exit code 2.
    bad = run_app("linear_probe.py", f"--encoder={tmp_path / 'missing'}", f"--workdir={probe_dir}", check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    # Resuming with another schedule would mix two runs: refused in one line, naming the way out.
    changed = run_app("linear_probe.py", *args[:-1], "--base_lr=0.5", "--verbose=0", check=False)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert f"workdir '{probe_dir}' was trained with other flags (--base_lr=0.1 -> --base_lr=0.5)" in changed.stderr
    assert "--allow_flag_change=base_lr" in changed.stderr
