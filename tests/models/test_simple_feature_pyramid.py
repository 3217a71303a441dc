"""SimpleFeaturePyramid: level shapes, the base map is the last block's tokens, save/load, gradients, errors."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae.models.simple_feature_pyramid import LEVELS

ENCODER = dict(patch_size=4, num_channels=3, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32)


def to_np(x):
    return ops.convert_to_numpy(x)


def pyramid(image_size=16, out_channels=8, norm="layer_norm", **encoder):
    encoder = keras_mae.ViTEncoder(image_size, **{**ENCODER, **encoder})
    return keras_mae.SimpleFeaturePyramid(encoder, out_channels=out_channels, norm=norm)


@pytest.mark.parametrize("image_size", [16, (16, 24)])
def test_level_shapes_are_strides_p_over_4_to_2p(image_size, rng):
    model = pyramid(image_size)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    outputs = model(rng.normal(size=(2, height, width, 3)).astype("float32"))
    assert list(outputs) == list(LEVELS)
    strides = {"P2": 1, "P3": 2, "P4": 4, "P5": 8}  # patch 4: p/4, p/2, p, 2p
    for level, stride in strides.items():
        assert tuple(outputs[level].shape) == (2, height // stride, width // stride, 8), level
    assert model.compute_output_shape((2, height, width, 3)) == {k: tuple(v.shape) for k, v in outputs.items()}


def test_base_map_is_the_last_blocks_patch_tokens(rng):
    model = pyramid((16, 24))
    images = rng.normal(size=(2, 16, 24, 3)).astype("float32")
    tokens = to_np(model.encoder.intermediate_features(images, [-1])[0])  # [B, 1 + 4 * 6, D], CLS first
    base = to_np(model.base_map(images))
    assert base.shape == (2, 4, 6, 16)
    np.testing.assert_allclose(base, tokens[:, 1:].reshape(2, 4, 6, 16), rtol=1e-6, atol=1e-6)
    # Not the final-normed tokens (ViTDet has no final norm), and the patch at row 1, column 2 sits at [1, 2].
    normed = to_np(model.encoder(images))[:, 1:].reshape(2, 4, 6, 16)
    assert not np.allclose(base, normed, atol=1e-3)
    np.testing.assert_allclose(base[:, 1, 2], tokens[:, 1 + 1 * 6 + 2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("norm", ["layer_norm", None])
def test_config_roundtrip_and_keras_file_give_equal_outputs(norm, tmp_path, rng):
    model = pyramid((16, 24), norm=norm, drop_path_rate=0.1)
    config = model.get_config()
    assert config["out_channels"] == 8 and config["norm"] == norm and config["encoder"]["class_name"] == "ViTEncoder"
    clone = keras_mae.SimpleFeaturePyramid.from_config(config)
    assert clone.get_config() == config
    assert clone.encoder.drop_path_rate == 0.1
    images = rng.normal(size=(2, 16, 24, 3)).astype("float32")
    path = str(tmp_path / "pyramid.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_mae.SimpleFeaturePyramid)
    assert loaded.get_config() == config
    expected, actual = model(images), loaded(images)
    for level in LEVELS:
        np.testing.assert_allclose(to_np(actual[level]), to_np(expected[level]), rtol=1e-6, atol=1e-6)


def test_training_reaches_the_encoder_as_drop_path(rng):
    model = pyramid(16, drop_path_rate=0.5)
    images = rng.normal(size=(8, 16, 16, 3)).astype("float32")  # last block's 2 branches x 8: 16 coin flips
    inference = [to_np(model(images)["P4"]) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    trained = [to_np(model(images, training=True)["P4"]) for _ in range(2)]
    assert not np.allclose(trained[0], trained[1])


def test_one_step_moves_every_trainable_weight_encoder_included(rng):
    model = pyramid(16)
    assert not model.encoder.norm.trainable  # unused, so frozen
    images = rng.normal(size=(2, 16, 16, 3)).astype("float32")
    targets = {k: rng.normal(size=tuple(v.shape)).astype("float32") for k, v in model(images).items()}
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss={k: "mse" for k in LEVELS})
    before = [to_np(v) for v in model.trainable_variables]
    assert any("blocks_0/qkv" in v.path for v in model.trainable_variables)
    model.fit(images, targets, epochs=1, batch_size=2, verbose=0)
    stuck = [v.path for a, v in zip(before, model.trainable_variables, strict=True) if np.array_equal(a, to_np(v))]
    assert not stuck


def test_bad_arguments_raise_clear_errors():
    encoder = keras_mae.ViTEncoder(16, **ENCODER)
    with pytest.raises(ValueError, match="encoder must be a ViTEncoder. Received: encoder of type Dense"):
        keras_mae.SimpleFeaturePyramid(keras.layers.Dense(2))
    for bad in (0, -3, 2.5, True, "256"):
        with pytest.raises(ValueError, match="out_channels must be a positive int"):
            keras_mae.SimpleFeaturePyramid(encoder, out_channels=bad)
    with pytest.raises(ValueError, match=r"norm must be one of \('layer_norm', None\). Received: norm='LN'"):
        keras_mae.SimpleFeaturePyramid(encoder, norm="LN")
    with pytest.raises(ValueError, match=r"even sides.*image_size=\(12, 16\), patch_size=4 \(grid \(3, 4\)\)"):
        keras_mae.SimpleFeaturePyramid(keras_mae.ViTEncoder((12, 16), **ENCODER))
