import keras
import numpy as np
import pytest
from keras import ops

from keras_mae import layers
from tests import reference_mae as ref


def roundtrip(layer):
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert keras.saving.deserialize_keras_object(serialized).get_config() == config


@pytest.mark.parametrize("shape, p", [((2, 8, 12, 3), 4), ((1, 6, 6, 1), 2), ((3, 4, 8, 4), 4)])
def test_patchify_matches_official_and_inverts(shape, p, rng):
    images = rng.normal(size=shape).astype("float32")
    patches = ops.convert_to_numpy(layers.patchify(images, p))
    np.testing.assert_array_equal(patches, ref.patchify_nchw(images.transpose(0, 3, 1, 2), p))
    grid = (shape[1] // p, shape[2] // p)
    back = ops.convert_to_numpy(layers.unpatchify(patches, p, grid, shape[3]))
    np.testing.assert_array_equal(back, images)


def test_patchify_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible by patch_size=4"):
        layers.patchify(np.zeros((1, 10, 8, 3), "float32"), 4)


@pytest.mark.parametrize("grid_h, grid_w, dim", [(14, 14, 768), (7, 7, 192), (3, 5, 16), (2, 1, 8)])
def test_sincos_equals_official(grid_h, grid_w, dim):
    ours = layers.sincos_position_embedding(grid_h, grid_w, dim, cls_token=True)
    official = ref.get_2d_sincos_pos_embed(dim, grid_h, grid_w, cls_token=True).astype("float32")
    np.testing.assert_array_equal(ours, official)
    assert ours.dtype == np.float32 and not ours[0].any()
    # Layout: the first quarter encodes the column (w), the third the row (h).
    row, col = 1, min(2, grid_w - 1)
    token = ours[1 + row * grid_w + col]
    assert token[0] == pytest.approx(np.sin(col)) and token[dim // 2] == pytest.approx(np.sin(row))


def test_sincos_rejects_bad_dim():
    with pytest.raises(ValueError, match="dim=10"):
        layers.sincos_position_embedding(2, 2, 10)


@pytest.mark.parametrize("mask_ratio", [0.0, 0.5, 0.75, 0.9])
def test_random_masking_properties(mask_ratio, rng):
    tokens = rng.normal(size=(4, 20, 6)).astype("float32")
    noise = rng.random((4, 20)).astype("float32")
    visible, mask, ids_restore = layers.RandomMasking(mask_ratio)(tokens, noise=noise)
    visible, mask, ids_restore = (ops.convert_to_numpy(t) for t in (visible, mask, ids_restore))
    keep = int(20 * (1 - mask_ratio))
    assert visible.shape == (4, keep, 6)
    np.testing.assert_array_equal(mask.sum(1), 20 - keep)
    ids_shuffle = np.argsort(noise, axis=1)
    np.testing.assert_array_equal(np.take_along_axis(ids_shuffle, ids_restore, 1), np.tile(np.arange(20), (4, 1)))
    # The lowest-noise patches are the kept ones, in noise order.
    np.testing.assert_array_equal(visible, np.take_along_axis(tokens, ids_shuffle[:, :keep, None], 1))
    np.testing.assert_array_equal(mask, (np.argsort(ids_shuffle, 1) >= keep).astype("float32"))


def test_random_masking_draws_new_masks_from_its_seed():
    masking = layers.RandomMasking(0.75, seed=1)
    tokens = np.zeros((2, 16, 4), "float32")
    first = ops.convert_to_numpy(masking(tokens)[1])
    second = ops.convert_to_numpy(masking(tokens)[1])
    assert first.sum() == second.sum() == 2 * 12
    assert not np.array_equal(first, second)
    again = ops.convert_to_numpy(layers.RandomMasking(0.75, seed=1)(tokens)[1])
    np.testing.assert_array_equal(first, again)


def test_grid_masking_keeps_one_patch_per_cell():
    _, mask, _ = layers.RandomMasking(0.75, "grid", (4, 6), seed=0)(np.zeros((8, 24, 2), "float32"))
    mask = ops.convert_to_numpy(mask).reshape(8, 2, 2, 3, 2).transpose(0, 1, 3, 2, 4).reshape(8, 6, 4)
    np.testing.assert_array_equal((1 - mask).sum(-1), 1)  # one kept per 2x2 cell
    offsets = np.argmin(mask, -1)
    assert (offsets == offsets[:, :1]).all()  # the same offset in every cell of a sample


def test_block_masking_masks_contiguous_regions():
    _, mask, _ = layers.RandomMasking(0.75, "block", (14, 14), seed=0)(np.zeros((16, 196, 2), "float32"))
    mask = ops.convert_to_numpy(mask)
    np.testing.assert_array_equal(mask.sum(1), 196 - 49)
    grid = mask.reshape(16, 14, 14)
    same_as_right = (grid[:, :, 1:] == grid[:, :, :-1]).mean()
    assert same_as_right > 0.75  # random masks at 75% give about 0.62


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask_ratio=1.0), "mask_ratio=1.0"),
    (dict(mask_ratio=-0.1), "mask_ratio=-0.1"),
    (dict(strategy="checker"), "strategy='checker'"),
    (dict(strategy="grid"), "grid_size"),
])
def test_random_masking_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.RandomMasking(**kwargs)


def test_patch_embedding_is_a_strided_conv_with_official_init(rng):
    layer = layers.PatchEmbedding(4, 32)
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    out = ops.convert_to_numpy(layer(images))
    kernel = ops.convert_to_numpy(layer.projection.kernel)
    bias = ops.convert_to_numpy(layer.projection.bias)
    expected = ref.patchify_nchw(images.transpose(0, 3, 1, 2), 4) @ kernel.reshape(-1, 32) + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(kernel).max() <= np.sqrt(6 / (48 + 32))  # xavier on the (32, 48) view
    assert np.abs(kernel).max() > 0.8 * np.sqrt(6 / (48 + 32))
    assert np.abs(bias).max() <= 1 / np.sqrt(48)
    with pytest.raises(ValueError, match="10x12 is not divisible by patch_size=4"):
        layers.PatchEmbedding(4, 8)(np.zeros((1, 10, 12, 3), "float32"))


def test_transformer_block_matches_numpy_reference(rng):
    block = layers.TransformerBlock(8, 2, 16)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    out = ops.convert_to_numpy(block(x))
    w = {v.path.split("/")[-2] + "/" + v.name: ops.convert_to_numpy(v) for v in block.weights}

    def norm(t, name):
        mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + 1e-6) * w[f"{name}/gamma"] + w[f"{name}/beta"]

    h = norm(x, "norm1") @ w["qkv/kernel"] + w["qkv/bias"]
    q, k, v = h.reshape(2, 5, 3, 2, 4).transpose(2, 0, 3, 1, 4)  # [B, N, T, H] each
    scores = q @ k.transpose(0, 1, 3, 2) / 2.0
    attn = np.exp(scores - scores.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    y = x + ((attn @ v).transpose(0, 2, 1, 3).reshape(2, 5, 8) @ w["proj/kernel"] + w["proj/bias"])
    from scipy.special import erf

    hidden = norm(y, "norm2") @ w["fc1/kernel"] + w["fc1/bias"]
    hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
    expected = y + hidden @ w["fc2/kernel"] + w["fc2/bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", ["torch", "xla_cpu", "xla_accelerator"])
def test_fast_forms_equal_keras_own(form, rng, monkeypatch):
    """Every form `fast_form` can pick, forced on this backend, computes Keras's own values."""
    from keras_mae.layers import fast_form

    monkeypatch.setattr(fast_form, "fast_form", lambda: form)
    x = ops.convert_to_tensor(rng.normal(size=(2, 5, 24)).astype("float32"))

    def close(a, b):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), atol=1e-5)

    close(layers.gelu(x), ops.gelu(x, approximate=False))
    q, k, v = np.split(ops.convert_to_numpy(x).reshape(2, 5, 3, 2, 4), 3, axis=2)
    expected = ops.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], scale=0.5)
    close(layers.attention(x, num_heads=2), ops.reshape(expected, (2, 5, 8)))
    ours, theirs = layers.LayerNorm(epsilon=1e-6), keras.layers.LayerNormalization(epsilon=1e-6)
    theirs.build(x.shape)
    ours.build(x.shape)
    ours.set_weights([rng.normal(size=(24,)).astype("float32") for _ in range(2)])
    theirs.set_weights(ours.get_weights())
    close(ours(x), theirs(x))
    ours, theirs = layers.TokenDense(3), keras.layers.Dense(3)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    close(ours(x), theirs(x))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's gradient graph")
@pytest.mark.parametrize("form", ["xla_cpu", "xla_accelerator"])
def test_attention_gradient_stacks_q_k_v_without_full_size_slice_gradients(form, rng, monkeypatch):
    """The qkv gradient is Keras's, assembled by one stack: no `StridedSliceGrad`, which fills a zero tensor of
    qkv's whole shape per slice (22% of a demo train step on a CPU before the split used `ops.unstack`)."""
    import tensorflow as tf

    from keras_mae.layers import fast_form

    monkeypatch.setattr(fast_form, "fast_form", lambda: form)
    x = tf.constant(rng.normal(size=(2, 5, 24)).astype("float32"))
    cotangent = tf.constant(rng.normal(size=(2, 5, 8)).astype("float32"))

    def keras_own(qkv):
        q, k, v = tf.split(tf.reshape(qkv, (2, 5, 3, 2, 4)), 3, axis=2)
        return ops.reshape(ops.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], scale=0.5), (2, 5, 8))

    def gradient(fn):
        @tf.function
        def traced(qkv):
            with tf.GradientTape() as tape:
                tape.watch(qkv)
                out = fn(qkv)
            return tape.gradient(out, qkv, output_gradients=cotangent)
        return traced

    ours = gradient(lambda qkv: layers.attention(qkv, num_heads=2))
    np.testing.assert_allclose(ours(x).numpy(), gradient(keras_own)(x).numpy(), atol=1e-5)
    op_types = {op.type for op in ours.get_concrete_function(x).graph.get_operations()}
    assert "StridedSliceGrad" not in op_types, sorted(op_types)


@pytest.mark.parametrize("use_bias,activation", [(True, None), (False, None), (True, "relu")])
def test_token_dense_equals_dense_in_outputs_and_gradients(rng, monkeypatch, use_bias, activation):
    # On torch TokenDense is one fused F.linear; elsewhere a 2-D matmul. One SGD step at lr 1 on the same
    # data moves each weight by its gradient, so equal weights after it mean equal gradients.
    from keras_mae.layers import torch_linear

    calls = []
    fused = torch_linear.linear
    monkeypatch.setattr(torch_linear, "linear", lambda *args: calls.append(1) or fused(*args))
    x = rng.normal(size=(8, 5, 24)).astype("float32")
    y = rng.normal(size=(8, 5, 3)).astype("float32")
    models = []
    for dense in (layers.TokenDense, keras.layers.Dense):
        model = keras.Sequential([keras.Input((5, 24)), dense(3, use_bias=use_bias, activation=activation)])
        models.append(model)
    models[0].set_weights([rng.normal(size=w.shape).astype("float32") for w in models[0].get_weights()])
    models[1].set_weights(models[0].get_weights())
    np.testing.assert_allclose(models[0].predict(x, verbose=0), models[1].predict(x, verbose=0), atol=1e-5)
    for model in models:
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for ours, theirs in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert bool(calls) == (keras.backend.backend() == "torch")


def test_every_layer_norm_of_the_models_takes_the_fast_form(tiny_config):
    import keras_mae

    model = keras_mae.MaskedAutoencoder(**tiny_config)
    classifier = keras_mae.ViTClassifier(**{k: v for k, v in tiny_config.items() if not k.startswith("decoder")})
    norms = [layer for m in (model, classifier) for layer in m._flatten_layers()
             if isinstance(layer, keras.layers.LayerNormalization)]
    # MAE encoder 2 blocks + norm, decoder 1 block + norm; classifier 2 blocks + norm + fc_norm.
    assert len(norms) == (2 * 2 + 1) + (1 * 2 + 1) + (2 * 2 + 1 + 1) and all(isinstance(n, layers.LayerNorm) for n in norms)


def test_layer_norm_refuses_settings_it_does_not_compute():
    with pytest.raises(ValueError, match="center=False"):
        layers.LayerNorm(center=False)


def test_fast_form_layers_round_trip_their_config():
    for layer in (layers.LayerNorm(epsilon=1e-6, name="norm"), layers.TokenDense(3, use_bias=False, name="fc")):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(restored) is type(layer)
        assert restored.get_config() == layer.get_config()


def test_drop_path_drops_whole_samples():
    layer = layers.DropPath(0.5, seed=0)
    out = ops.convert_to_numpy(layer(np.ones((64, 3, 2), "float32"), training=True))
    per_sample = out.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all() and 10 < (per_sample[:, 0] == 0).sum() < 54
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(np.ones((4, 2), "float32"))), 1.0)


@pytest.mark.parametrize("layer", [
    layers.PatchEmbedding(4, 8),
    layers.RandomMasking(0.6, "block", (3, 4), seed=3),
    layers.TransformerBlock(8, 2, 16, drop_path_rate=0.1, layer_norm_epsilon=1e-5),
    layers.DropPath(0.2, seed=1),
], ids=lambda layer: type(layer).__name__)
def test_layer_config_roundtrip(layer):
    roundtrip(layer)
