"""keras-hub style presets: `from_preset` of built-in names, preset folders, `.keras` files, workdirs and hub
handles; `save_to_preset`; the `presets` attribute; the errors."""

import json
import os
import sys

import keras
import numpy as np
import pytest

from keras_mae import MaskedAutoencoder, ViTClassifier, ViTEncoder, runs
from keras_mae.callbacks.checkpoint import EpochCheckpoint
from keras_mae.models import preset_io
from keras_mae.models.presets import PRESETS, encoder_config, preset_config
from tests.conftest import TINY
from tests.run_app import backend_independent

ENCODER = {key: value for key, value in TINY.items() if not key.startswith("decoder")}
SMALL = [name for name in PRESETS if name.endswith(("_28", "_32"))]


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def images(n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 12, 3)).astype("float32")


def noise(n=2):
    return np.random.default_rng(1).random((n, 6)).astype("float32")


def assert_same_mae(a, b):
    x = images()
    np.testing.assert_allclose(to_np(a(x, noise=noise())["pred"]), to_np(b(x, noise=noise())["pred"]), atol=1e-6)


def assert_same_encoder(a, b):
    np.testing.assert_allclose(to_np(a(images())), to_np(b(images())), atol=1e-6)


def config_of(model):
    return {key: value for key, value in model.get_config().items() if key != "name"}


def one_line(error):
    message = str(error.value)
    assert "\n" not in message, message
    return message


# --- Built-in names and the presets attribute ----------------------------------------------------------------


@backend_independent
def test_builtin_names_build_as_before_with_overrides():
    name, small = "mae_vit_tiny_patch4_28", dict(num_layers=1, decoder_num_layers=1)
    mae = MaskedAutoencoder.from_preset(name, **small, mask_ratio=0.5)
    assert config_of(mae) == config_of(MaskedAutoencoder(**{**preset_config(name), **small, "mask_ratio": 0.5}))
    encoder = ViTEncoder.from_preset(name, num_layers=1)
    assert config_of(encoder) == config_of(ViTEncoder(**{**encoder_config(name), "num_layers": 1}))
    classifier = ViTClassifier.from_preset(name, num_layers=1, num_classes=7)
    assert config_of(classifier) == config_of(ViTClassifier(**{**encoder_config(name), "num_layers": 1,
                                                               "num_classes": 7}))


@backend_independent
def test_presets_attribute_lists_every_builtin_name_with_its_size():
    for cls in (MaskedAutoencoder, ViTEncoder, ViTClassifier):
        assert set(cls.presets) == set(PRESETS)
        for name, entry in cls.presets.items():
            assert set(entry) == {"description", "params", "image_size", "patch_size", "num_channels"}
            assert entry["patch_size"] == PRESETS[name]["patch_size"] and isinstance(entry["params"], int)
    assert MaskedAutoencoder.presets["mae_vit_base_patch16"]["params"] == 111_907_840  # official ViT-B + dec512d8b
    assert ViTEncoder.presets["mae_vit_huge_patch14"]["image_size"] == (224, 224)


@backend_independent
@pytest.mark.parametrize("name", SMALL)
def test_preset_parameter_counts_equal_the_built_models(name):
    mae = MaskedAutoencoder.from_preset(name)
    assert MaskedAutoencoder.presets[name]["params"] == mae.count_params()
    assert ViTEncoder.presets[name]["params"] == mae.encoder.count_params()
    if name == SMALL[0]:
        assert ViTClassifier.presets[name]["params"] == ViTClassifier.from_preset(name).count_params()


@backend_independent
def test_parameter_count_arithmetic_covers_the_options():
    for config in (dict(TINY), dict(TINY, encode_mask_tokens=True)):
        assert preset_io.parameter_count("MaskedAutoencoder", config) == MaskedAutoencoder(**config).count_params()
    for options in (dict(num_classes=5), dict(num_classes=0, global_pool=False)):
        model = ViTClassifier(**ENCODER, **options)
        assert preset_io.parameter_count("ViTClassifier", {**ENCODER, **options}) == model.count_params()


# --- Round trips ---------------------------------------------------------------------------------------------


def test_mae_preset_folder_round_trip_and_its_encoder_and_classifier(tmp_path):
    mae = MaskedAutoencoder(**TINY)
    folder = tmp_path / "preset"
    mae.save_to_preset(folder)
    assert sorted(os.listdir(folder)) == ["config.json", "metadata.json", "model.weights.h5"]
    config = json.loads((folder / "config.json").read_text())
    assert {"module", "class_name", "config", "registered_name"} <= set(config) and "compile_config" not in config
    assert config["class_name"] == "MaskedAutoencoder" and config["config"]["hidden_dim"] == 16
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parameter_count"] == mae.count_params() and metadata["keras_version"] == keras.version()
    assert {"keras_mae_version", "date_saved"} <= set(metadata)

    loaded = MaskedAutoencoder.from_preset(str(folder))
    assert isinstance(loaded, MaskedAutoencoder) and config_of(loaded) == config_of(mae)
    assert_same_mae(mae, loaded)
    encoder = ViTEncoder.from_preset(folder)
    assert isinstance(encoder, ViTEncoder)
    assert_same_encoder(mae.encoder, encoder)
    classifier = ViTClassifier.from_preset(folder, num_classes=3)
    assert isinstance(classifier, ViTClassifier) and classifier.num_classes == 3
    assert_same_encoder(mae.encoder, classifier.encoder)
    assert tuple(classifier(images()).shape) == (2, 3)


def test_encoder_and_classifier_preset_round_trips(tmp_path):
    encoder = ViTEncoder(**ENCODER)
    encoder.save_to_preset(tmp_path / "encoder")
    assert_same_encoder(encoder, ViTEncoder.from_preset(tmp_path / "encoder"))
    assert_same_encoder(encoder, ViTClassifier.from_preset(tmp_path / "encoder", num_classes=2).encoder)

    classifier = ViTClassifier(**ENCODER, num_classes=4)
    classifier.head.bias.assign(np.arange(4, dtype="float32"))  # not the initial zeros
    classifier.save_to_preset(tmp_path / "classifier")
    loaded = ViTClassifier.from_preset(tmp_path / "classifier")
    np.testing.assert_allclose(to_np(classifier(images())), to_np(loaded(images())), atol=1e-6)
    assert_same_encoder(classifier.encoder, ViTEncoder.from_preset(tmp_path / "classifier"))
    new_head = ViTClassifier.from_preset(tmp_path / "classifier", num_classes=6)  # the encoder and fc_norm kept
    assert tuple(new_head(images()).shape) == (2, 6)
    assert_same_encoder(classifier.encoder, new_head.encoder)
    np.testing.assert_array_equal(to_np(classifier.fc_norm.gamma), to_np(new_head.fc_norm.gamma))


def test_keras_file_loads_as_each_class(tmp_path):
    mae = MaskedAutoencoder(**TINY)
    path = str(tmp_path / "mae.keras")
    mae.save(path)
    assert_same_mae(mae, MaskedAutoencoder.from_preset(path))
    assert_same_encoder(mae.encoder, ViTEncoder.from_preset(path))
    assert_same_encoder(mae.encoder, ViTClassifier.from_preset(path, num_classes=2).encoder)


def test_official_layout_file_loads_through_load_model(tmp_path):
    from keras_mae.checkpoints import save_official

    mae = MaskedAutoencoder(**TINY)
    path = save_official(mae, str(tmp_path / "mae.npz"))
    assert_same_mae(mae, MaskedAutoencoder.from_preset(path))
    assert_same_encoder(mae.encoder, ViTClassifier.from_preset(path, num_classes=2).encoder)


def test_workdir_loads_its_newest_checkpoint_then_its_final_model(tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    running = MaskedAutoencoder(**TINY)
    running.compile(optimizer="adamw")
    runs.write_run(workdir, running, {"dataset": "tiny", "eval_dataset": "tiny"}, [0.5], [0.25])
    checkpoint = EpochCheckpoint(os.path.join(workdir, runs.CHECKPOINT_DIR))  # as pretraining writes them
    checkpoint.set_model(running)
    checkpoint.save(1)
    assert_same_mae(running, MaskedAutoencoder.from_preset(workdir))
    assert_same_encoder(running.encoder, ViTEncoder.from_preset(workdir))

    final = MaskedAutoencoder(**TINY)
    runs.save_exports(final, workdir)  # the end of pretraining: model.keras wins over the checkpoints
    assert_same_mae(final, MaskedAutoencoder.from_preset(workdir, mask_ratio=0.75))
    assert_same_encoder(final.encoder, ViTClassifier.from_preset(workdir, num_classes=2).encoder)


# --- Overrides on saved models -------------------------------------------------------------------------------


def test_overrides_that_keep_the_weights_apply_and_architecture_ones_are_refused(tmp_path):
    mae = MaskedAutoencoder(**TINY)
    mae.save_to_preset(tmp_path / "mae")
    loaded = MaskedAutoencoder.from_preset(tmp_path / "mae", mask_ratio=0.5, norm_pix_loss=True, drop_path_rate=0.1,
                                           hidden_dim=16)  # an architecture argument at its saved value is fine
    assert (loaded.mask_ratio, loaded.norm_pix_loss, loaded.drop_path_rate) == (0.5, True, 0.1)
    assert_same_encoder(mae.encoder, loaded.encoder)
    for source, target in zip(mae.decoder.weights, loaded.decoder.weights, strict=True):
        np.testing.assert_array_equal(to_np(source), to_np(target))
    bigger = MaskedAutoencoder.from_preset(tmp_path / "mae", image_size=(16, 12))  # sin-cos tables recomputed
    assert bigger.encoder.grid_size == (4, 3)
    kernels = (mae.encoder.patch_embed.weights[0], bigger.encoder.patch_embed.weights[0])
    np.testing.assert_array_equal(*map(to_np, kernels))

    for cls, override in ((MaskedAutoencoder, dict(hidden_dim=32)), (MaskedAutoencoder, dict(decoder_num_layers=2)),
                          (ViTEncoder, dict(num_layers=3)), (ViTClassifier, dict(patch_size=2))):
        with pytest.raises(ValueError, match=f"{next(iter(override))}=.*saved with") as error:
            cls.from_preset(tmp_path / "mae", **override)
        assert "drop" in one_line(error)
    with pytest.raises(ValueError, match="does not apply"):
        MaskedAutoencoder.from_preset(tmp_path / "mae", num_classes=3)


# --- save_to_preset refuses to overwrite what is not a preset --------------------------------------------------


@backend_independent
def test_save_to_preset_keeps_other_files_and_replaces_an_earlier_preset(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    encoder = ViTEncoder(**ENCODER)
    with pytest.raises(ValueError, match="notes.txt.*pick another folder") as error:
        encoder.save_to_preset(folder)
    one_line(error)
    assert os.listdir(folder) == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="is a file"):
        encoder.save_to_preset(folder / "notes.txt")

    encoder.save_to_preset(tmp_path / "preset")
    other = ViTEncoder(**ENCODER)
    other.save_to_preset(tmp_path / "preset")  # an earlier preset is replaced
    assert_same_encoder(other, ViTEncoder.from_preset(tmp_path / "preset"))


# --- Errors ----------------------------------------------------------------------------------------------------


@backend_independent
def test_errors_name_the_valid_presets_and_the_expected_files(tmp_path):
    with pytest.raises(ValueError, match="mae_vit_base_patch16.*folder.*\\.keras.*workdir") as error:
        MaskedAutoencoder.from_preset("mae_vit_bse_patch16")
    one_line(error)
    with pytest.raises(ValueError, match="mae_vit_tiny_patch4_28"):
        ViTClassifier.from_preset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json.*model.weights.h5") as error:
        ViTEncoder.from_preset(tmp_path / "empty")
    one_line(error)

    encoder = ViTEncoder(**ENCODER)
    encoder.save_to_preset(tmp_path / "encoder")
    with pytest.raises(ValueError, match="no decoder") as error:
        MaskedAutoencoder.from_preset(tmp_path / "encoder")
    one_line(error)
    os.remove(tmp_path / "encoder" / "model.weights.h5")
    with pytest.raises(ValueError, match="no model.weights.h5"):
        ViTEncoder.from_preset(tmp_path / "encoder")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"class_name": "BertBackbone", "config": {},
                                                               "registered_name": "keras_hub>BertBackbone"}))
    with pytest.raises(ValueError, match="describes BertBackbone, not a keras_mae model"):
        ViTEncoder.from_preset(tmp_path / "other")
    encoder.save_weights(str(tmp_path / "bare.weights.h5"))
    with pytest.raises(ValueError, match="weights only"):
        ViTEncoder.from_preset(str(tmp_path / "bare.weights.h5"))


# --- Hub handles -----------------------------------------------------------------------------------------------


@backend_independent
def test_a_hub_handle_without_keras_hub_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as if not installed
    for handle in ("hf://someone/mae_tiny", "kaggle://someone/mae/keras/tiny"):
        with pytest.raises(ImportError, match=r"pip install 'keras_mae\[hub\]'.*keras-hub") as error:
            MaskedAutoencoder.from_preset(handle)
        one_line(error)


@backend_independent
def test_a_hub_handle_loads_through_keras_hub(tmp_path, monkeypatch):
    pytest.importorskip("keras_hub")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # keras-hub's download cache
    mae = MaskedAutoencoder(**TINY)
    mae.save_to_preset(tmp_path / "preset")
    handle = "file://" + str(tmp_path / "preset")  # keras-hub copies gfile URLs into its cache, offline
    assert_same_mae(mae, MaskedAutoencoder.from_preset(handle))
    assert_same_encoder(mae.encoder, ViTEncoder.from_preset(handle))
