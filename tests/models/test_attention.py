"""Attention maps and intermediate features: equal to a PyTorch reference's, and the fused path unchanged."""

import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae.utils.attention_maps import attention_grid, attention_rollout, cls_attention
from tests.run_app import backend_independent


def _encoder(tiny_config, num_layers=3):
    keys = ("image_size", "patch_size", "num_channels", "hidden_dim", "num_heads", "mlp_dim")
    return keras_mae.ViTEncoder(**{k: tiny_config[k] for k in keys}, num_layers=num_layers)


def test_attention_and_intermediate_features_equal_hugging_face_s(tiny_config, rng):
    """HF ViTMAE with nothing masked (mask_ratio 0, increasing noise): its `attentions` and `hidden_states`."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.hf_reference import build_hf_mae, hf_to_official

    config = {**tiny_config, "image_size": (8, 8), "mask_ratio": 0.0}  # HF ViTMAE builds square grids only
    reference = build_hf_mae(config, norm_pix_loss=False)
    reference.set_attn_implementation("eager")  # the fused kernels return no probabilities
    model = keras_mae.MaskedAutoencoder(**config)
    keras_mae.checkpoints.load_official_weights(model, hf_to_official(reference))
    images = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    noise = np.tile(np.arange(4, dtype="float32"), (2, 1))  # keeps the patches in order
    with torch.no_grad():
        expected = reference.vit(torch.from_numpy(images.transpose(0, 3, 1, 2)), noise=torch.from_numpy(noise),
                                 output_attentions=True, output_hidden_states=True)

    tokens, attention = model.encoder(images, return_attention=True)
    assert len(attention) == len(expected.attentions) == 2
    for ours, theirs in zip(attention, expected.attentions):
        np.testing.assert_allclose(ops.convert_to_numpy(ours), theirs.numpy(), atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(tokens), expected.last_hidden_state.numpy(), atol=1e-5)
    features = model.encoder.intermediate_features(images, blocks=[1, 0])
    for ours, block in zip(features, (1, 0)):
        np.testing.assert_allclose(ops.convert_to_numpy(ours), expected.hidden_states[block + 1].numpy(), atol=1e-5)
    # Not vacuous: the blocks' maps differ, and are not uniform.
    first, last = (ops.convert_to_numpy(a) for a in attention)
    assert np.abs(first - last).max() > 1e-3 and first.std() > 1e-3


def test_asking_for_attention_leaves_the_tokens_as_the_fused_path_s(tiny_config, rng):
    encoder = _encoder(tiny_config)
    images = rng.normal(size=(2, *tiny_config["image_size"], 3)).astype("float32")
    plain = ops.convert_to_numpy(encoder(images))
    tokens, attention = encoder(images, return_attention=True)
    np.testing.assert_allclose(ops.convert_to_numpy(tokens), plain, atol=1e-5)
    tokens_count = 1 + encoder.num_patches
    for probabilities in attention:
        probabilities = ops.convert_to_numpy(probabilities)
        assert probabilities.shape == (2, tiny_config["num_heads"], tokens_count, tokens_count)
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)  # each query's weights
        assert probabilities.min() >= 0.0
    # The features: the last block's with the final norm are the encoder's output; earlier ones run fewer blocks.
    last, first = encoder.intermediate_features(images, blocks=[-1, 0], final_norm=True)
    np.testing.assert_allclose(ops.convert_to_numpy(last), plain, atol=1e-5)
    assert np.abs(ops.convert_to_numpy(first) - plain).max() > 1e-2
    assert len(encoder.intermediate_features(images)) == encoder.num_layers
    with pytest.raises(ValueError, match=r"blocks must be indices in \[-3, 3\).*blocks=\[3\]"):
        encoder.intermediate_features(images, blocks=[3])


@backend_independent  # numpy only
def test_rollout_follows_the_residual_and_the_chain_of_blocks():
    # Two tokens + CLS on a 1x2 grid. Block 1: patch 1 takes everything from patch 2; block 2: CLS reads patch 1.
    first = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]], "float32")
    second = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 1]], "float32")
    attention = [a[None, None] for a in (first, second)]
    rollout = attention_rollout(attention, (1, 2))
    # By hand: A = (a + I) / 2 per block (rows sum to 1); CLS row of A2 @ A1 = [0.5, 0.25, 0.25], scaled to max 1.
    np.testing.assert_allclose(rollout, [[[1.0, 1.0]]], atol=1e-6)
    only_last = attention_rollout(attention[1:], (1, 2))
    np.testing.assert_allclose(only_last, [[[1.0, 0.0]]], atol=1e-6)
    np.testing.assert_array_equal(cls_attention(attention[1], (1, 2)), [[[[1.0, 0.0]]]])
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        attention_rollout(attention, (1, 2), head_fusion="sum")
    grid = attention_grid(np.zeros((1, 4, 8, 1), "float32"), [rollout], [0.5], [0.25], patch_size=4)
    assert grid.shape == (4, 8 + 2 + 8, 3) and grid.dtype == np.uint8
    assert (grid[:, :8] == 128).all() and not (grid[:, 10:] == 128).all()  # the image, then the map over it
