"""The torch backend's attention on views of the fused qkv equals Keras's `dot_product_attention`."""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

from keras_mae.layers import torch_attention

attention_module = importlib.import_module("keras_mae.layers.attention")  # the package exports the function

torch_only = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's attention")


def _keras_own(qkv, num_heads):
    """What `attention` computed before: Keras's call on q, k and v taken apart."""
    batch, length, width = qkv.shape
    head_dim = width // 3 // num_heads
    query, key, value = ops.unstack(ops.reshape(qkv, (batch, length, 3, num_heads, head_dim)), 3, axis=2)
    out = ops.dot_product_attention(query, key, value, scale=head_dim**-0.5)
    return ops.reshape(out, (batch, length, width // 3))


@torch_only
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-6), ("bfloat16", 1e-2)])
@pytest.mark.parametrize("length", [13, 50])
def test_outputs_and_gradients_equal_keras_own(rng, dtype, tolerance, length):
    import torch

    x = rng.normal(size=(3, length, 3 * 4 * 8)).astype("float32")
    cotangent = torch.tensor(rng.normal(size=(3, length, 4 * 8)), dtype=torch.float32)
    results = []
    for attend in (lambda qkv: attention_module.attention(qkv, num_heads=4), lambda qkv: _keras_own(qkv, 4)):
        qkv = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
        out = attend(qkv)
        (out.float() * cotangent).sum().backward()
        results.append((out.detach().float().numpy(), qkv.grad.float().numpy()))
    (ours, our_grad), (theirs, their_grad) = results
    assert ours.shape == (3, length, 32)
    np.testing.assert_allclose(ours, theirs, atol=tolerance)
    np.testing.assert_allclose(our_grad, their_grad, atol=tolerance * 4)
    # The q, k and v columns all get gradient (a wrong permutation would leave a block at zero or swap them).
    assert all(np.abs(our_grad[..., i * 32:(i + 1) * 32]).max() > 1e-3 for i in range(3))


@torch_only
def test_attention_takes_the_torch_form_unless_flash_attention_is_off(rng, monkeypatch):
    calls = []
    direct = torch_attention.attention
    monkeypatch.setattr(torch_attention, "attention", lambda *a: calls.append(a[1]) or direct(*a))
    qkv = ops.convert_to_tensor(rng.normal(size=(2, 5, 24)), "float32")
    expected = ops.convert_to_numpy(_keras_own(qkv, 2))
    np.testing.assert_allclose(ops.convert_to_numpy(attention_module.attention(qkv, 2)), expected, atol=1e-6)
    assert calls == [0.5]
    from keras.src.backend.common import global_state

    previous = global_state.get_global_attribute("flash_attention")
    keras.config.disable_flash_attention()
    try:
        assert not torch_attention.applies()
        np.testing.assert_allclose(ops.convert_to_numpy(attention_module.attention(qkv, 2)), expected, atol=1e-6)
    finally:
        global_state.set_global_attribute("flash_attention", previous)
    assert calls == [0.5]  # Keras's call ran while flash attention was off
    assert torch_attention.applies()


def test_applies_only_on_the_torch_backend():
    assert torch_attention.applies() == (keras.backend.backend() == "torch")
