"""ViTClassifier: config round trip, save/load, official layer ids, encoder transfer from a pretrained MAE."""


import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae import checkpoints as ck
from keras_mae.optimizers import layer_decay_multipliers

ENCODER = dict(image_size=(8, 12), patch_size=4, num_channels=3, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32)


def to_np(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("global_pool, num_classes", [(True, 5), (False, 3), (True, 0)])
def test_config_roundtrip_and_outputs(global_pool, num_classes, rng):
    model = keras_mae.ViTClassifier(**ENCODER, num_classes=num_classes, global_pool=global_pool, drop_path_rate=0.1)
    config = model.get_config()
    assert keras_mae.ViTClassifier.from_config(config).get_config() == config
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    assert model(images).shape == (2, num_classes or 16)
    assert ("fc_norm.weight" in ck.official_variables(model)) == global_pool
    assert ("norm.weight" in ck.official_variables(model)) != global_pool


def test_keras_save_load_gives_identical_outputs(tmp_path, rng):
    model = keras_mae.ViTClassifier(**ENCODER, num_classes=4)
    model.compile(optimizer="adamw", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = rng.normal(size=(4, 8, 12, 3)).astype("float32")
    labels = np.arange(4) % 4
    before = [to_np(v) for v in model.trainable_variables]
    model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    moved = [not np.array_equal(a, to_np(v)) for a, v in zip(before, model.trainable_variables, strict=True)]
    assert all(moved), [v.path for v, m in zip(model.trainable_variables, moved) if not m]
    assert not model.encoder.norm.trainable  # unused with global pool, as the official model has no norm
    path = tmp_path / "clf.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_mae.ViTClassifier)
    np.testing.assert_array_equal(to_np(loaded(images)), to_np(model(images)))


def test_layer_id_is_official_get_layer_id_for_vit():
    model = keras_mae.ViTClassifier(**ENCODER, num_classes=4)
    ids = {v.path: model.layer_id(v) for v in model.weights}
    assert ids["encoder/cls_token"] == ids["encoder/pos_embed"] == ids["encoder/patch_embed/projection/kernel"] == 0
    assert ids["encoder/blocks_0/qkv/kernel"] == 1 and ids["encoder/blocks_1/fc2/bias"] == 2
    assert ids["fc_norm/gamma"] == ids["head/kernel"] == 3
    official = {"cls_token": 0, "pos_embed": 0, "patch_embed.proj.weight": 0, "blocks.0.attn.qkv.weight": 1,
                "blocks.1.mlp.fc2.bias": 2, "fc_norm.weight": 3, "head.bias": 3}
    assert {key: model.layer_id(key) for key in official} == official
    multipliers = layer_decay_multipliers(model.trainable_variables, model.num_layers, 0.5, model.layer_id)
    assert multipliers["encoder/patch_embed/projection/kernel"] == 0.5**3 and multipliers["head/kernel"] == 1.0


def test_pretrained_encoder_transfers(tiny_config, rng):
    mae = keras_mae.MaskedAutoencoder(**tiny_config)
    model = keras_mae.ViTClassifier(**{k: tiny_config[k] for k in ENCODER}, num_classes=4, global_pool=False)
    ck.load_official_weights(model.encoder, ck.export_official_weights(mae.encoder))
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    np.testing.assert_array_equal(to_np(model.encoder(images)), to_np(mae.encoder(images)))
    missing, unexpected = ck.load_weights_into(model, ck.export_official_weights(mae), strict=False)
    assert missing == ["head.bias", "head.weight"] and "decoder_embed.weight" in unexpected


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        keras_mae.ViTClassifier(**ENCODER, num_classes=-1)
