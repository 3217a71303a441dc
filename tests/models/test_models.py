import os

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae import checkpoints


def to_np(x):
    return ops.convert_to_numpy(x)


def make(tiny_config, **overrides):
    return keras_mae.MaskedAutoencoder(**{**tiny_config, **overrides})


def images_for(config, n=4, seed=0):
    h, w = config["image_size"]
    return np.random.default_rng(seed).normal(size=(n, h, w, config["num_channels"])).astype("float32")


def test_config_roundtrip(tiny_config):
    model = make(tiny_config, norm_pix_loss=True, mask_ratio=0.5, mask_strategy="block", seed=3)
    config = model.get_config()
    assert keras_mae.MaskedAutoencoder.from_config(config).get_config() == config
    for sub in (model.encoder, model.decoder):
        assert type(sub).from_config(sub.get_config()).get_config() == sub.get_config()


def test_keras_save_load_gives_identical_outputs(tiny_config, tmp_path):
    model = make(tiny_config, norm_pix_loss=True)
    model.compile(optimizer="adamw")
    images = images_for(tiny_config)
    model.fit(images, epochs=1, batch_size=2, verbose=0)
    noise = np.random.default_rng(1).random((4, 6)).astype("float32")
    path = os.path.join(tmp_path, "mae.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_mae.MaskedAutoencoder) and loaded.norm_pix_loss
    np.testing.assert_array_equal(to_np(loaded(images, noise=noise)["pred"]), to_np(model(images, noise=noise)["pred"]))
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)


def test_loss_ignores_predictions_on_visible_patches(tiny_config):
    for norm_pix_loss in (False, True):
        model = make(tiny_config, norm_pix_loss=norm_pix_loss)
        images = images_for(tiny_config)
        out = model(images)
        pred, mask = to_np(out["pred"]), to_np(out["mask"])
        loss = float(to_np(model.reconstruction_loss(images, pred, mask)))
        changed_visible = pred + 5.0 * (1 - mask)[..., None]
        changed_removed = pred + 5.0 * mask[..., None]
        assert float(to_np(model.reconstruction_loss(images, changed_visible, mask))) == pytest.approx(loss, rel=1e-6)
        assert float(to_np(model.reconstruction_loss(images, changed_removed, mask))) > loss + 1.0


def test_loss_is_official_forward_loss(tiny_config, rng):
    from tests.reference_mae import patchify_nchw

    model = make(tiny_config, norm_pix_loss=True)
    images = images_for(tiny_config)
    pred = rng.normal(size=(4, 6, 48)).astype("float32")
    mask = (rng.random((4, 6)) < 0.7).astype("float32")
    target = patchify_nchw(images.transpose(0, 3, 1, 2), 4).astype("float64")
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    expected = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert float(to_np(model.reconstruction_loss(images, pred, mask))) == pytest.approx(expected, rel=1e-5)


def test_one_fit_step_moves_every_trainable_weight(tiny_config):
    model = make(tiny_config, drop_path_rate=0.1)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    before = {v.path: to_np(v).copy() for v in model.trainable_variables}
    frozen = {v.path: to_np(v).copy() for v in model.non_trainable_variables if "pos_embed" in v.path}
    model.fit(images_for(tiny_config), epochs=1, batch_size=4, verbose=0)
    for v in model.trainable_variables:
        assert not np.array_equal(before[v.path], to_np(v)), v.path
    # encoder: patch kernel+bias, cls, 2 blocks x 12, norm 2; decoder: embed 2, mask token, 1 block, norm 2, pred 2
    assert len(before) == (2 + 1 + 2 * 12 + 2) + (2 + 1 + 12 + 2 + 2)
    for v in model.non_trainable_variables:  # the fixed position embeddings never move
        if v.path in frozen:
            np.testing.assert_array_equal(frozen[v.path], to_np(v))


def test_loss_falls_on_a_small_fixed_set(tiny_config):
    keras.utils.set_random_seed(0)
    model = make(tiny_config, norm_pix_loss=False, seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(3e-3, beta_2=0.95))
    # Smooth ramps: a removed patch is predictable from the visible ones.
    rng = np.random.default_rng(0)
    h, w = tiny_config["image_size"]
    slopes = rng.normal(size=(16, 1, 1, 3))
    x = np.broadcast_to(slopes * np.linspace(-1, 1, h)[None, :, None, None], (16, h, w, 3)).astype("float32")
    history = model.fit(x, epochs=12, batch_size=8, verbose=0).history["loss"]
    assert history[-1] < 0.7 * history[0] and history[-1] == min(history), history


def test_fit_accepts_labels_and_tf_data_and_evaluates(tiny_config):
    import tensorflow as tf

    model = make(tiny_config)
    model.compile(optimizer="adamw")
    x = images_for(tiny_config, n=8)
    y = np.arange(8)
    assert np.isfinite(model.fit(x, y, batch_size=4, verbose=0).history["loss"][0])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    assert np.isfinite(model.fit(ds, verbose=0, shuffle=False).history["loss"][0])
    assert np.isfinite(model.evaluate(ds, verbose=0, return_dict=True)["loss"])


def test_compile_refuses_a_loss_or_metrics_and_fit_refuses_sample_weights(tiny_config):
    model = make(tiny_config)
    for arguments, named in (({"loss": "mse"}, "loss='mse'"), ({"metrics": ["mae"]}, "metrics=['mae']"),
                             ({"loss_weights": [1.0]}, "loss_weights=[1.0]"),
                             ({"weighted_metrics": ["mae"]}, "weighted_metrics=['mae']")):
        with pytest.raises(ValueError, match="computes its own loss") as error:
            model.compile(optimizer="adamw", **arguments)
        assert named in str(error.value) and "\n" not in str(error.value)
    model.compile(optimizer="adamw")
    x = images_for(tiny_config, n=4)
    with pytest.raises(ValueError, match="does not weight its loss by sample_weight"):
        model.fit(x, np.zeros(4), sample_weight=np.ones(4), batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="does not weight its loss by sample_weight"):
        model.fit(x, np.arange(4) % 2, class_weight={0: 1.0, 1: 2.0}, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="does not weight its loss by sample_weight"):
        model.evaluate(x, np.zeros(4), sample_weight=np.ones(4), batch_size=4, verbose=0)
    assert np.isfinite(model.fit(x, np.zeros(4), batch_size=4, verbose=0).history["loss"][0])  # still trains
    import tensorflow as tf

    weighted = tf.data.Dataset.from_tensor_slices((x, np.zeros(4), np.ones(4, "float32"))).batch(4)
    with pytest.raises(ValueError, match="Received a sample_weight in the data"):
        model.fit(weighted, verbose=0)


@pytest.mark.parametrize("mask_strategy", ["random", "block"])
def test_evaluate_masks_are_fixed_and_leave_the_training_masks_alone(tiny_config, mask_strategy):
    x = images_for(tiny_config, n=8)
    model = make(tiny_config, mask_strategy=mask_strategy, seed=1)  # eval_mask_seed defaults to 0
    model.compile(optimizer="adamw")
    first = model.evaluate(x, batch_size=4, verbose=0)
    assert model.evaluate(x, batch_size=4, verbose=0) == first  # the same masks every time: a stable number
    expected = 0.0
    noise = to_np(model.evaluation_noise(x[:4]))
    assert noise.shape == (4, model.encoder.num_patches)
    for batch in (x[:4], x[4:]):  # = the loss under exactly these masks
        expected += 0.5 * float(to_np(model.compute_reconstruction_loss(batch, noise=noise)))
    assert first == pytest.approx(expected, rel=1e-5)
    random_masks = make(tiny_config, mask_strategy=mask_strategy, seed=1, eval_mask_seed=None)
    random_masks.compile(optimizer="adamw")
    losses = {random_masks.evaluate(x, batch_size=4, verbose=0) for _ in range(3)}
    assert len(losses) > 1  # drawn from the training stream: changes every call
    # Evaluating in between does not change the masks training draws.
    keras.utils.set_random_seed(0)
    plain = make(tiny_config, mask_strategy=mask_strategy, seed=1)
    keras.utils.set_random_seed(0)
    evaluated = make(tiny_config, mask_strategy=mask_strategy, seed=1)
    evaluated.compile(optimizer="adamw")
    evaluated.evaluate(x, batch_size=4, verbose=0)
    np.testing.assert_array_equal(to_np(plain(x)["mask"]), to_np(evaluated(x)["mask"]))
    with pytest.raises(ValueError, match="eval_mask_seed must be an int or None"):
        make(tiny_config, eval_mask_seed=0.5)


def test_reconstruction_figure_of_the_last_epoch_is_always_drawn(tiny_config, tmp_path):
    from keras_mae.callbacks import ReconstructionSummary

    model = make(tiny_config)
    model.compile(optimizer="adamw")
    x = images_for(tiny_config, n=4)
    summary = ReconstructionSummary(x[:2], (0.5,) * 3, (0.25,) * 3, png_dir=str(tmp_path), every_n_epochs=5)
    model.fit(x, batch_size=2, epochs=2, verbose=0, callbacks=[summary])
    assert sorted(os.listdir(tmp_path)) == ["epoch_0002.png"]


def test_encoder_is_a_plain_backbone_and_the_mae_masks(tiny_config):
    model = make(tiny_config, mask_ratio=0.75)
    images = images_for(tiny_config)
    tokens = model.encoder(images)
    assert tokens.shape == (4, 7, 16)  # CLS + 6 patches: the backbone never masks
    np.testing.assert_allclose(to_np(model.encoder.encode(model.encoder.embed(images))), to_np(tokens), atol=1e-6)
    outputs = model(images)
    assert outputs["latent"].shape == (4, 2, 16) and to_np(outputs["mask"]).sum() == 4 * 5
    assert model.mask_ratio == 0.75 and "mask_ratio" not in model.encoder.get_config()
    # The pools, with one meaning each: CLS after the final norm; the official global pool for "mean".
    np.testing.assert_allclose(to_np(model.encoder.features(images, pool="cls")), to_np(tokens)[:, 0], atol=1e-6)
    pooled = to_np(model.encoder(images, final_norm=False))[:, 1:].mean(1)
    expected = (pooled - pooled.mean(-1, keepdims=True)) / np.sqrt(pooled.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(to_np(model.encoder.features(images, pool="mean")), expected, atol=1e-4)
    encoder = keras_mae.ViTEncoder(**{k: tiny_config[k] for k in ("image_size", "patch_size", "num_channels")},
                                   hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=8)
    assert encoder.features(images).shape == (4, 16)
    assert type(encoder).from_config(encoder.get_config()).get_config() == encoder.get_config()
    old_config = {**encoder.get_config(), "mask_ratio": 0.5, "pool": "mean", "seed": 1, "encode_mask_tokens": False}
    assert type(encoder).from_config(old_config).get_config() == encoder.get_config()  # keras_mae 0.1 configs
    with pytest.raises(ValueError, match="pool='max'"):
        encoder.features(images, pool="max")


def test_reconstruct_pastes_visible_patches_and_unnormalises(tiny_config):
    model = make(tiny_config, norm_pix_loss=True)
    images = images_for(tiny_config)
    noise = np.random.default_rng(2).random((4, 6)).astype("float32")
    out = {k: to_np(v) for k, v in model.reconstruct(images, noise=noise).items()}
    mask = out["mask"]
    np.testing.assert_allclose(out["pasted"] * (1 - mask), images * (1 - mask), atol=1e-6)
    np.testing.assert_allclose(out["pasted"] * mask, out["reconstruction"] * mask, atol=1e-6)
    assert (out["masked"][mask == 1] == 0).all()
    target, mean, var = (None if t is None else to_np(t) for t in model.patch_targets(images))
    pred = to_np(model(images, noise=noise)["pred"])
    expected = keras_mae.layers.unpatchify(pred * np.sqrt(var + 1e-6) + mean, 4, (2, 3), 3)
    np.testing.assert_allclose(out["reconstruction"], to_np(expected), atol=1e-5)


def test_presets_and_errors():
    model = keras_mae.MaskedAutoencoder.from_preset("mae_vit_tiny_patch4_28", num_layers=1, decoder_num_layers=1)
    assert model.image_size == (28, 28) and model.num_channels == 1 and model.hidden_dim == 192
    base = keras_mae.models.presets.preset_config("mae_vit_base_patch16")
    assert (base["hidden_dim"], base["num_layers"], base["num_heads"], base["decoder_hidden_dim"]) == (768, 12, 12, 512)
    huge = keras_mae.models.presets.preset_config("mae_vit_huge_patch14")
    assert (huge["hidden_dim"], huge["num_layers"], huge["patch_size"]) == (1280, 32, 14)
    with pytest.raises(ValueError, match="mae_vit_base_patch16"):
        keras_mae.MaskedAutoencoder.from_preset("mae_vit_bse_patch16")
    with pytest.raises(ValueError, match="not divisible by patch_size=16"):
        keras_mae.MaskedAutoencoder.from_preset("mae_vit_tiny_patch16", image_size=100, num_layers=1)
    with pytest.raises(ValueError, match="mask_ratio=1.5"):
        keras_mae.MaskedAutoencoder.from_preset("mae_vit_tiny_patch4_28", mask_ratio=1.5)


def test_official_weights_export_import_is_exact_and_strict(tiny_config):
    source, target = make(tiny_config), make(tiny_config)
    state_dict = checkpoints.export_official_weights(source)
    assert state_dict["patch_embed.proj.weight"].shape == (16, 3, 4, 4)
    assert state_dict["blocks.1.attn.qkv.weight"].shape == (48, 16)
    assert state_dict["decoder_pred.weight"].shape == (48, 8)
    checkpoints.load_official_weights(target, {"model": state_dict})
    for v_source, v_target in zip(source.weights, target.weights):
        np.testing.assert_array_equal(to_np(v_source), to_np(v_target))

    broken = dict(state_dict, extra_key=np.zeros(1))
    del broken["blocks.0.mlp.fc1.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['blocks.0.mlp.fc1.bias'\], unexpected keys \['extra_key'\]"):
        checkpoints.load_official_weights(target, broken)
    with pytest.raises(ValueError, match="Shape mismatch for 'norm.weight'"):
        checkpoints.load_official_weights(target, dict(state_dict, **{"norm.weight": np.zeros(3)}))

    encoder_keys = {k: v for k, v in state_dict.items() if not (k.startswith("decoder") or k == "mask_token")}
    checkpoints.load_official_weights(target.encoder, encoder_keys)
    missing, unexpected = checkpoints.load_official_weights(target.encoder, state_dict, strict=False)
    assert not missing and "mask_token" in unexpected


def test_mask_tokens_in_encoder_ablation(tiny_config):
    model = make(tiny_config, encode_mask_tokens=True)
    images = images_for(tiny_config)
    noise = np.random.default_rng(3).random((4, 6)).astype("float32")
    out = model(images, noise=noise)
    assert out["latent"].shape == (4, 7, 16)  # CLS + every patch
    assert out["pred"].shape == (4, 6, 48)
    np.testing.assert_array_equal(to_np(out["mask"]), to_np(make(tiny_config)(images, noise=noise)["mask"]))
    # Removed patches' pixels do not reach the encoder: changing them leaves the latent unchanged.
    mask_pixels = to_np(model.reconstruct(images, noise=noise)["mask"])
    changed = images + 3.0 * mask_pixels
    np.testing.assert_allclose(to_np(model(changed, noise=noise)["latent"]), to_np(out["latent"]), atol=1e-5)
    model.compile(optimizer="adamw")
    model.fit(images, epochs=1, batch_size=4, verbose=0)
    assert keras_mae.MaskedAutoencoder.from_config(model.get_config()).encode_mask_tokens
