"""Export to Hugging Face (`save_hf`) and the config stored with official-layout files (`save_official`)."""

import json

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae import checkpoints as ck
from tests.hf_reference import assert_matches_hf
from tests.run_app import backend_independent

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ENCODER = dict(patch_size=4, num_channels=3, hidden_dim=16, num_layers=2, num_heads=4, mlp_dim=32,
               layer_norm_epsilon=1e-12)  # 4 heads of width 16, eps 1e-12: neither is what the shapes would tell
DECODER = dict(decoder_hidden_dim=8, decoder_num_layers=1, decoder_num_heads=4, decoder_mlp_dim=16)


def to_np(x):
    return ops.convert_to_numpy(x)


def nchw(images):
    return torch.from_numpy(images.transpose(0, 3, 1, 2))


def randomized(model, seed=0):
    """The model with every trained weight random (LayerNorm scales near 1): zero biases would hide a wrong map."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_weights:
        centre = 1.0 if variable.path.endswith("gamma") else 0.0
        variable.assign((centre + 0.3 * rng.normal(size=variable.shape)).astype("float32"))
    return model


def mae(image_size=(8, 8), **kwargs):
    return randomized(keras_mae.MaskedAutoencoder(image_size, **ENCODER, **DECODER, **kwargs))


def strict(cls, folder):
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    return model.eval()


def assert_same_model(loaded, model):
    assert type(loaded) is type(model)
    assert loaded.get_config() | {"name": None} == model.get_config() | {"name": None}
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_mae_loads_strictly_in_transformers_and_gives_our_predictions_and_loss(tmp_path, rng):
    model = mae(mask_ratio=0.5, norm_pix_loss=True)
    reference = strict(transformers.ViTMAEForPreTraining, ck.save_hf(model, tmp_path / "hf"))
    config = reference.config
    assert (config.num_attention_heads, config.decoder_num_attention_heads, config.layer_norm_eps) == (4, 4, 1e-12)
    assert (config.mask_ratio, config.norm_pix_loss, config.image_size) == (0.5, True, 8)
    images, outputs, expected = assert_matches_hf(model, reference, rng, atol=1e-5)
    loss = model.reconstruction_loss(images, outputs["pred"], outputs["mask"])
    np.testing.assert_allclose(float(to_np(loss)), float(expected.loss), atol=1e-5, rtol=1e-5)


def test_encoder_loads_as_vitmae_model_and_gives_our_tokens(tmp_path, rng):
    encoder = randomized(keras_mae.ViTEncoder((8, 12), **ENCODER))  # non-square: ViTMAEModel takes [h, w]
    reference = strict(transformers.ViTMAEModel, ck.save_hf(encoder, tmp_path / "hf"))
    assert reference.config.mask_ratio == 0.0 and list(reference.config.image_size) == [8, 12]
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    in_order = torch.arange(6, dtype=torch.float32).expand(2, 6)  # mask_ratio 0 and sorted noise: no shuffle
    with torch.no_grad():
        expected = reference(nchw(images), noise=in_order).last_hidden_state.numpy()
    np.testing.assert_allclose(to_np(encoder(images)), expected, atol=1e-5, rtol=1e-5)


def test_cls_classifier_loads_as_vit_for_image_classification(tmp_path, rng):
    model = randomized(keras_mae.ViTClassifier((8, 12), **ENCODER, num_classes=5, global_pool=False))
    reference = strict(transformers.ViTForImageClassification, ck.save_hf(model, tmp_path / "hf"))
    assert reference.config.num_labels == 5
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    with torch.no_grad():
        expected = reference(nchw(images)).logits.numpy()
    np.testing.assert_allclose(to_np(model(images)), expected, atol=1e-5, rtol=1e-5)


def test_load_model_gives_back_the_exported_model(tmp_path, rng):
    models = [
        mae(mask_ratio=0.6, norm_pix_loss=True, mask_strategy="block", seed=3, eval_mask_seed=7, drop_path_rate=0.1),
        randomized(keras_mae.ViTEncoder((8, 12), **ENCODER, drop_path_rate=0.2)),
        randomized(keras_mae.ViTClassifier(8, **ENCODER, num_classes=3, global_pool=False)),
    ]
    for i, model in enumerate(models):
        loaded = ck.load_model(ck.save_hf(model, tmp_path / f"hf{i}"))  # no overrides: all from config.json
        assert_same_model(loaded, model)
        images = rng.normal(size=(2, *model.image_size, 3)).astype("float32")
        extra = {"noise": rng.random((2, 4)).astype("float32")} if i == 0 else {}
        a, b = model(images, **extra), loaded(images, **extra)
        np.testing.assert_array_equal(to_np(a["pred"] if i == 0 else a), to_np(b["pred"] if i == 0 else b))


@backend_independent
def test_models_without_a_hf_counterpart_get_one_clear_error(tmp_path):
    encoder_only = dict(ENCODER, image_size=8)
    cases = [
        (keras_mae.ViTClassifier(**encoder_only, num_classes=3), r"global_pool=True.*use save_official"),
        (keras_mae.ViTClassifier(**encoder_only, num_classes=0, global_pool=False),
         r"num_classes=0.*save_hf\(model.encoder, folder\)"),
        (keras_mae.MaskedAutoencoder(8, **ENCODER, **DECODER, encode_mask_tokens=True),
         r"encode_mask_tokens=True.*model.save\('model.keras'\)"),
        (keras_mae.MaskedAutoencoder((8, 12), **ENCODER, **DECODER), r"square grids only.*image_size=8x12"),
        (keras.layers.Dense(3), r"exports a MaskedAutoencoder, ViTEncoder or ViTClassifier; received Dense"),
    ]
    for model, message in cases:
        with pytest.raises(ValueError, match=message):
            ck.save_hf(model, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # refused before anything is written


@pytest.mark.parametrize("ext", [".safetensors", ".pth", ".npz"])
def test_official_file_round_trip_needs_no_overrides(ext, tmp_path, rng):
    model = mae((8, 12), mask_ratio=0.6, norm_pix_loss=True)
    path = ck.save_official(model, tmp_path / f"mae{ext}")
    loaded = ck.load_model(path)  # heads and eps 1e-12 from the file: no hand-given overrides
    assert_same_model(loaded, model)
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    noise = rng.random((2, 6)).astype("float32")
    np.testing.assert_array_equal(to_np(model(images, noise=noise)["pred"]), to_np(loaded(images, noise=noise)["pred"]))
    assert ck.load_model(path, mask_ratio=0.5).mask_ratio == 0.5  # an explicit override still wins


@backend_independent
def test_config_is_stored_where_documented_and_old_files_read_as_before(tmp_path):
    from safetensors import safe_open

    model = keras_mae.ViTEncoder(8, **ENCODER)
    expected = ck.model_config(model)
    with safe_open(ck.save_official(model, tmp_path / "e.safetensors"), framework="np") as f:
        metadata = f.metadata()
    assert metadata["format"] == "pt" and json.loads(metadata[ck.CONFIG_KEY]) == expected
    data = torch.load(ck.save_official(model, tmp_path / "e.pth"), weights_only=True)
    assert data[ck.CONFIG_KEY] == expected and sorted(data["model"]) == sorted(ck.export_official_weights(model))
    ck.save_official(model, tmp_path / "e.npz")
    assert json.loads((tmp_path / "e.npz.config.json").read_text()) == expected
    assert ck.read_weights(tmp_path / "e.npz")[1] == {**expected, "image_size": (8, 8)}
    # A file without a config (write_state_dict, or from before) reads as before; an old .npz sidecar goes.
    ck.write_state_dict(ck.export_official_weights(model), tmp_path / "e.npz")
    assert not (tmp_path / "e.npz.config.json").exists() and ck.read_weights(tmp_path / "e.npz")[1] == {}
    old = ck.load_model(tmp_path / "e.npz", num_heads=4)
    assert old.layer_norm_epsilon == 1e-6  # no config: the official default, as before
    (tmp_path / "e.npz.config.json").write_text("{not json")
    with pytest.raises(ck.CheckpointError, match=r"keras_mae_config stored with .*e.npz' is not valid JSON"):
        ck.load_model(tmp_path / "e.npz")
