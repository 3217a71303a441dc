"""keras-hub interop: `to_keras_hub` / `from_keras_hub` give the same outputs and weights, on every backend."""

import sys

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae.interop import from_keras_hub, to_keras_hub
from keras_mae.layers.position_embedding import sincos_position_embedding

keras_hub = pytest.importorskip("keras_hub")

TINY = dict(patch_size=4, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32)
HUB = dict(patch_size=4, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32)
ATOL = 1e-5


def randomise(model, seed=0):
    """Every trainable weight random normal * 0.3 (LayerNorm gammas 1 + that): a wrong mapping cannot hide."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_weights:
        values = 0.3 * rng.normal(size=variable.shape)
        variable.assign((values + 1.0 if variable.path.endswith("gamma") else values).astype(variable.dtype))
    return model


def sincos_table(backbone):
    """Sets a backbone's position table to the sin-cos one of its grid; returns the backbone."""
    embedding = backbone.get_layer("vit_patching_and_embedding")
    grid = [s // p for s, p in zip(embedding.image_size, embedding.patch_size)]
    embedding.position_embedding.embeddings.assign(sincos_position_embedding(*grid, 16, cls_token=True))
    return backbone


def images(shape, seed=1):
    return np.random.default_rng(seed).normal(size=(2, *shape)).astype("float32")


def numpy(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("image_size, channels", [((8, 12), 3), ((8, 8), 1)])
def test_to_keras_hub_matches_encoder(image_size, channels):
    encoder = randomise(keras_mae.ViTEncoder(image_size, num_channels=channels, layer_norm_epsilon=1e-5, **TINY))
    backbone = to_keras_hub(encoder)

    assert isinstance(backbone, keras_hub.models.ViTBackbone)
    assert tuple(backbone.image_shape) == (*image_size, channels) and backbone.layer_norm_epsilon == 1e-5
    assert (backbone.num_layers, backbone.num_heads, backbone.hidden_dim, backbone.mlp_dim) == (2, 2, 16, 32)
    table = backbone.get_layer("vit_patching_and_embedding").position_embedding.embeddings
    np.testing.assert_array_equal(numpy(table), numpy(encoder.pos_embed)[0])
    x = images((*image_size, channels))
    expected = numpy(encoder(x))
    assert expected.shape == (2, 1 + image_size[0] * image_size[1] // 16, 16)
    np.testing.assert_allclose(numpy(backbone(x)), expected, atol=ATOL, rtol=0)


def test_to_keras_hub_takes_the_encoder_of_an_mae_or_a_classifier():
    x = images((8, 12, 3))
    for model in (keras_mae.MaskedAutoencoder((8, 12), decoder_hidden_dim=8, decoder_num_layers=1,
                                              decoder_num_heads=2, decoder_mlp_dim=16, **TINY),
                  keras_mae.ViTClassifier((8, 12), num_classes=3, **TINY)):
        randomise(model)
        np.testing.assert_allclose(numpy(to_keras_hub(model)(x)), numpy(model.encoder(x)), atol=ATOL, rtol=0)


def test_round_trip_keeps_weights_and_outputs():
    encoder = randomise(keras_mae.ViTEncoder((8, 12), **TINY))
    back = from_keras_hub(to_keras_hub(encoder))

    assert isinstance(back, keras_mae.ViTEncoder)
    assert keras_mae.checkpoints.model_config(back) == keras_mae.checkpoints.model_config(encoder)
    relative = lambda model: [v.path.split("/", 1)[1] for v in model.weights]  # noqa: E731, without the model name
    assert relative(back) == relative(encoder)
    for ours, theirs in zip(encoder.weights, back.weights):
        np.testing.assert_array_equal(numpy(theirs), numpy(ours), err_msg=ours.path)
    x = images((8, 12, 3))
    np.testing.assert_array_equal(numpy(back(x)), numpy(encoder(x)))


def test_from_keras_hub_matches_a_bias_free_backbone():
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(12, 8, 3), use_mha_bias=False, use_mlp_bias=False, use_patch_bias=False, **HUB
    )
    sincos_table(randomise(backbone))
    encoder = from_keras_hub(backbone)

    assert encoder.image_size == (12, 8) and encoder.grid_size == (3, 2)
    assert float(np.abs(numpy(encoder.blocks[0].qkv.bias)).max()) == 0.0
    x = images((12, 8, 3))
    np.testing.assert_allclose(numpy(encoder(x)), numpy(backbone(x)), atol=ATOL, rtol=0)


def test_from_keras_hub_reads_a_channels_first_backbone():
    backbone = sincos_table(randomise(keras_hub.models.ViTBackbone(
        image_shape=(1, 8, 12), data_format="channels_first", **HUB
    )))
    encoder = from_keras_hub(backbone)

    assert encoder.image_size == (8, 12) and encoder.num_channels == 1
    x = images((8, 12, 1))
    if keras.backend.backend() == "tensorflow":  # TensorFlow's CPU Conv2D has no NCHW kernel: same weights, NHWC
        backbone_nhwc = keras_hub.models.ViTBackbone(image_shape=(8, 12, 1), **HUB)
        backbone_nhwc.set_weights(backbone.get_weights())
        expected = backbone_nhwc(x)
    else:
        expected = backbone(x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(numpy(encoder(x)), numpy(expected), atol=ATOL, rtol=0)


def test_from_keras_hub_refuses_a_learned_position_table_unless_allowed():
    backbone = randomise(keras_hub.models.ViTBackbone(image_shape=(8, 8, 3), **HUB))
    with pytest.raises(ValueError, match="not the 2-D sin-cos table of its 2x2 patch grid.*allow_learned"):
        from_keras_hub(backbone)
    encoder = from_keras_hub(backbone, allow_learned_position_embedding=True)

    assert not encoder.pos_embed.trainable
    x = images((8, 8, 3))
    np.testing.assert_allclose(numpy(encoder(x)), numpy(backbone(x)), atol=ATOL, rtol=0)


def test_from_keras_hub_refuses_what_vit_encoder_cannot_hold():
    no_cls = keras_hub.models.ViTBackbone(image_shape=(8, 8, 3), use_class_token=False, **HUB)
    with pytest.raises(ValueError, match="always has a class token.*use_class_token=False"):
        from_keras_hub(no_cls)
    oblong = keras_hub.models.ViTBackbone(image_shape=(8, 8, 3), **{**HUB, "patch_size": (4, 2)})
    with pytest.raises(ValueError, match=r"square patches only.*patch_size=\(4, 2\)"):
        from_keras_hub(oblong)


def test_to_keras_hub_refuses_other_models():
    with pytest.raises(ValueError, match="Expected a ViTEncoder.*Dense"):
        to_keras_hub(keras.layers.Dense(2))


def test_missing_keras_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    encoder = keras_mae.ViTEncoder(8, **TINY)
    with pytest.raises(ImportError, match=r"to_keras_hub needs keras-hub: pip install 'keras_mae\[hub\]'"):
        to_keras_hub(encoder)
    with pytest.raises(ImportError, match="from_keras_hub needs keras-hub"):
        from_keras_hub(object())
