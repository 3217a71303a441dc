"""jax GPUs' padded attention (one hidden token for cuDNN) equals the unpadded call, checked on the CPU through XLA."""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae
from keras_mae.layers import jax_padded_attention

attention_module = importlib.import_module("keras_mae.layers.attention")  # the package exports the function

jax_only = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the padding is for jax's cuDNN attention")


@pytest.fixture
def as_on_a_gpu(monkeypatch):
    """`attention` as it runs on a jax GPU, with XLA (which takes the same arguments) in cuDNN's place."""
    monkeypatch.setattr(attention_module, "uses_fused_attention", lambda: True)
    monkeypatch.setattr(jax_padded_attention, "_on_gpu", lambda: True)
    monkeypatch.setattr(jax_padded_attention, "IMPLEMENTATION", None)
    calls = []
    padded = jax_padded_attention.padded_attention
    monkeypatch.setattr(jax_padded_attention, "padded_attention", lambda *a: calls.append(a[0].shape) or padded(*a))
    return calls


def _qkv(rng, length, dtype="float32", batch=2, heads=2, head_dim=8):
    return [ops.convert_to_tensor(rng.normal(size=(batch, length, heads, head_dim)), dtype) for _ in range(3)]


@jax_only
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-6), ("bfloat16", 2e-2)])
def test_padded_outputs_and_gradients_equal_the_unpadded_call(rng, dtype, tolerance, monkeypatch):
    import jax

    monkeypatch.setattr(jax_padded_attention, "IMPLEMENTATION", None)
    q, k, v = _qkv(rng, 7, dtype)
    cotangent = ops.convert_to_tensor(rng.normal(size=q.shape), "float32")

    def loss(attend):
        return lambda q, k, v: (attend(q, k, v).astype("float32") * cotangent).sum()

    def padded(q, k, v):
        return jax_padded_attention.padded_attention(q, k, v, 0.3)

    def plain(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, scale=0.3)

    assert padded(q, k, v).shape == q.shape
    np.testing.assert_allclose(np.float32(padded(q, k, v)), np.float32(plain(q, k, v)), atol=tolerance)
    grads = jax.jit(jax.grad(loss(padded), argnums=(0, 1, 2)))(q, k, v)
    expected = jax.grad(loss(plain), argnums=(0, 1, 2))(q, k, v)
    for ours, theirs in zip(grads, expected):
        np.testing.assert_allclose(np.float32(ours), np.float32(theirs), atol=tolerance * 5)
    # Not vacuous: without the lengths, the zero token takes weight from every query.
    unmasked = jax.nn.dot_product_attention(*(jax.numpy.pad(t, ((0, 0), (0, 1), (0, 0), (0, 0))) for t in (q, k, v)),
                                            scale=0.3)[:, :7]
    assert np.abs(np.float32(unmasked) - np.float32(plain(q, k, v))).max() > 0.1


@jax_only
def test_attention_pads_odd_lengths_in_16_bits_only(rng, as_on_a_gpu):
    for length, dtype in ((7, "bfloat16"), (8, "bfloat16"), (7, "float32")):
        q, k, v = _qkv(rng, length, dtype, heads=2, head_dim=4)
        qkv = ops.reshape(ops.stack([q, k, v], axis=2), (2, length, 3 * 8))
        out = attention_module.attention(qkv, num_heads=2)
        expected = ops.reshape(ops.dot_product_attention(q, k, v, scale=0.5), (2, length, 8))
        np.testing.assert_allclose(np.float32(out), np.float32(expected), atol=1e-2 if dtype == "bfloat16" else 1e-6)
    assert as_on_a_gpu == [(2, 7, 2, 4)]  # only the odd bfloat16 call


@jax_only
def test_keras_flash_switch_and_refusal_fall_back_to_keras_s_call(rng, as_on_a_gpu, monkeypatch):
    q, k, v = _qkv(rng, 7, "bfloat16", heads=2, head_dim=4)
    qkv = ops.reshape(ops.stack([q, k, v], axis=2), (2, 7, 24))
    expected = np.float32(ops.reshape(ops.dot_product_attention(q, k, v, scale=0.5), (2, 7, 8)))
    from keras.src.backend.common import global_state

    assert jax_padded_attention.applies(q)
    previous = global_state.get_global_attribute("flash_attention")
    keras.config.disable_flash_attention()
    try:
        assert not jax_padded_attention.applies(q)
        np.testing.assert_allclose(np.float32(attention_module.attention(qkv, 2)), expected, atol=1e-2)
    finally:
        global_state.set_global_attribute("flash_attention", previous)
    assert as_on_a_gpu == []
    monkeypatch.setattr(jax_padded_attention, "IMPLEMENTATION", "cudnn")  # no cuDNN on this CPU: refused
    monkeypatch.setattr(jax_padded_attention, "TRACE_COUNTS", {"padded": 0, "refused": 0})
    with pytest.warns(UserWarning, match="cuDNN refused attention over 7 tokens padded to 8"):
        np.testing.assert_allclose(np.float32(attention_module.attention(qkv, 2)), expected, atol=1e-2)
    assert as_on_a_gpu == [(2, 7, 2, 4)]
    assert jax_padded_attention.TRACE_COUNTS == {"padded": 0, "refused": 1}


@jax_only
def test_a_refusal_raised_only_when_differentiating_falls_back_too(rng, as_on_a_gpu, monkeypatch):
    """jax checks cuDNN's training support in the forward rule of its custom gradient, inside `value_and_grad`."""
    import inspect

    import jax

    cudnn = pytest.importorskip("jax._src.cudnn.fused_attention_stablehlo")  # jax's private module: may move
    check = getattr(cudnn, "check_is_flash_attention", None)
    if check is None or "is_training" not in inspect.signature(check).parameters:
        pytest.skip("this jax checks cuDNN's training support elsewhere")

    def refuse_in_training(*args, **kwargs):
        bound = inspect.signature(check).bind(*args, **kwargs)
        if bound.arguments["is_training"]:
            query, key = bound.arguments["query"], bound.arguments["key"]
            raise NotImplementedError(f"Unsupported sequence length Q {query.shape[1]}, KV {key.shape[1]}.")

    monkeypatch.setattr(cudnn, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(cudnn, "check_is_flash_attention", refuse_in_training)
    monkeypatch.setattr(jax_padded_attention, "IMPLEMENTATION", "cudnn")
    monkeypatch.setattr(jax_padded_attention, "TRACE_COUNTS", {"padded": 0, "refused": 0})
    q, k, v = _qkv(rng, 7, "bfloat16", heads=2, head_dim=4)
    qkv = ops.reshape(ops.stack([q, k, v], axis=2), (2, 7, 24))

    def loss(qkv):
        return attention_module.attention(qkv, 2).astype("float32").sum()

    with pytest.warns(UserWarning, match="Unsupported sequence length Q 8, KV 8"):
        value, grad = jax.jit(jax.value_and_grad(loss))(qkv)
    assert jax_padded_attention.TRACE_COUNTS == {"padded": 0, "refused": 1}
    expected_value, expected_grad = jax.value_and_grad(
        lambda qkv: ops.dot_product_attention(*(qkv.reshape(2, 7, 3, 2, 4)[:, :, i] for i in range(3)),
                                              scale=0.5).astype("float32").sum())(qkv)
    np.testing.assert_allclose(float(value), float(expected_value), rtol=1e-2)
    np.testing.assert_allclose(np.float32(grad), np.float32(expected_grad), atol=2e-2)


@jax_only
def test_train_steps_with_padding_equal_those_without(tiny_config, rng, as_on_a_gpu, monkeypatch):
    """The decoder sees 7 tokens (6 patches and the class token): mixed_bfloat16 train steps, padded or not."""
    images = rng.normal(size=(4, *tiny_config["image_size"], 3)).astype("float32")

    def train(padding):
        monkeypatch.setattr(jax_padded_attention, "ENABLED", padding)
        keras.config.set_dtype_policy("mixed_bfloat16")
        keras.utils.set_random_seed(0)
        model = keras_mae.MaskedAutoencoder(**tiny_config)
        model.compile(optimizer=keras.optimizers.AdamW(1e-2))
        history = model.fit(images, batch_size=2, epochs=2, verbose=0, shuffle=False)
        return history.history["loss"], [np.float32(w) for w in model.weights]

    padded_losses, padded_weights = train(True)
    assert (2, 7, tiny_config["decoder_num_heads"], 4) in as_on_a_gpu  # the decoder's attention was padded
    plain_losses, plain_weights = train(False)
    np.testing.assert_allclose(padded_losses, plain_losses, rtol=1e-3)
    for padded, plain in zip(padded_weights, plain_weights):
        np.testing.assert_allclose(padded, plain, atol=2e-3)
