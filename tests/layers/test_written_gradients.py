"""`LayerNorm`, `gelu` and CPU `attention` outside torch: written-out gradients equal Keras's own layers' and keep
only the input (and row statistics)."""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

from keras_mae import layers

layer_norm_module = importlib.import_module("keras_mae.layers.layer_norm")
attention_module = importlib.import_module("keras_mae.layers.attention")

FORMS = ["xla_cpu", "xla_accelerator"]
jax_only = pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax.vjp shows what the backward pass keeps")


def _one_sgd_step(middle, policy, weight_scale=1.0):
    """Weights of Dense -> `middle` -> Dense after one SGD step at learning rate 1: equal weights mean equal gradients,
    the first Dense's included, which takes the gradient through `middle`'s input."""
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 24)), keras.layers.Dense(24), middle, keras.layers.Dense(3)])
    weights = np.random.default_rng(1)
    model.set_weights([(weight_scale * weights.normal(size=w.shape)).astype("float32") for w in model.get_weights()])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    data = np.random.default_rng(2)  # the same data for every model compared
    x = data.normal(size=(8, 5, 24)).astype("float32")
    y = data.normal(size=(8, 5, 3)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


def _assert_same_step(ours, theirs, atol):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=atol)


def _autodiff(monkeypatch, step):
    """`step()` with the written-out gradients off: autodiff of the same forward pass."""
    from keras_mae.layers import fast_form

    with monkeypatch.context() as patch:
        patch.setattr(fast_form, "WRITTEN_GRADIENTS", False)
        return step()


def _compare(make_ours, make_keras_own, policy, monkeypatch, weight_scale=1.0):
    """One SGD step with our layer (written-out gradient), with it under autodiff, and with Keras's own layer.

    float32: the three agree to float32 rounding. mixed_bfloat16: bf16 rounding (of the Dense layers around it
    too) moves every run by up to about 0.15 from float32's step, so ours must be as close to float32's as the
    other two are.
    """
    ours = _one_sgd_step(make_ours(), policy, weight_scale)
    autodiff = _autodiff(monkeypatch, lambda: _one_sgd_step(make_ours(), policy, weight_scale))
    theirs = _one_sgd_step(make_keras_own(), policy, weight_scale)
    if policy == "float32":
        _assert_same_step(ours, autodiff, 2e-5)
        _assert_same_step(ours, theirs, 2e-5)
    else:
        exact = _one_sgd_step(make_keras_own(), "float32", weight_scale)

        def error(weights):
            return max(float(np.abs(a - b).max()) for a, b in zip(weights, exact))

        assert error(ours) <= 1.25 * max(error(autodiff), error(theirs)), (error(ours), error(autodiff), error(theirs))
    return ours


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_layer_norm_gradients_equal_autodiff_and_keras_layer_normalization(form, policy, monkeypatch):
    from keras_mae.layers import fast_form

    monkeypatch.setattr(fast_form, "fast_form", lambda: form)
    assert fast_form.uses_written_gradients()
    ours = _compare(lambda: layers.LayerNorm(epsilon=1e-6),
                    lambda: keras.layers.LayerNormalization(epsilon=1e-6), policy, monkeypatch)
    # gamma and beta moved from their random start, so their gradients were compared too
    start = np.random.default_rng(1)
    assert all(np.abs(w - start.normal(size=w.shape)).max() > 1e-3 for w in ours)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_gelu_gradient_equals_autodiff_and_keras_gelu(form, policy, monkeypatch):
    from keras_mae.layers import fast_form

    monkeypatch.setattr(fast_form, "fast_form", lambda: form)
    _compare(lambda: keras.layers.Activation(layers.gelu),
             lambda: keras.layers.Activation(lambda x: ops.gelu(x, approximate=False)), policy, monkeypatch)


# Where `attention` is written out: XLA:CPU's form, and accelerators' with the fused kernel switched off (the GPU
# benchmark's jax+written variant).
WRITTEN_ATTENTION = [("xla_cpu", True), ("xla_accelerator", False)]


def _written_attention(monkeypatch, form, fused):
    from keras_mae.layers import fast_form

    monkeypatch.setattr(fast_form, "fast_form", lambda: form)
    monkeypatch.setattr(fast_form, "FUSED_ATTENTION", fused)
    assert not fast_form.uses_fused_attention() and fast_form.uses_written_gradients()


@pytest.mark.parametrize("form, fused", WRITTEN_ATTENTION)
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_written_attention_gradient_equals_autodiff_and_keras_dot_product_attention(form, fused, policy, monkeypatch):
    """Where `attention` is written out (forced on torch), its backward pass recomputes the probabilities."""
    _written_attention(monkeypatch, form, fused)

    def keras_own(qkv):  # (batch, 5, 24): 2 heads of 4
        query, key, value = ops.unstack(ops.reshape(qkv, (-1, 5, 3, 2, 4)), 3, axis=2)
        return ops.reshape(ops.dot_product_attention(query, key, value, scale=0.5), (-1, 5, 8))

    _compare(lambda: _QKVAttention(lambda qkv: attention_module.attention(qkv, 2)), lambda: _QKVAttention(keras_own),
             policy, monkeypatch, weight_scale=0.3)  # unit weights saturate the softmax: bf16 noise would decide


class _QKVAttention(keras.layers.Layer):
    """`attention(qkv)` as a layer: (batch, length, 3 dim) -> (batch, length, dim)."""

    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    def call(self, qkv):
        return self.attention(qkv)

    def compute_output_shape(self, shape):
        return (*shape[:-1], shape[-1] // 3)


def test_torch_keeps_its_own_kernels(monkeypatch):
    from keras_mae.layers import fast_form

    monkeypatch.setattr(fast_form, "fast_form", lambda: fast_form.TORCH)
    assert not fast_form.uses_written_gradients()


def _kept_bytes(fn, *args):
    """Bytes of the arrays `jax.vjp` keeps for the backward pass of `fn` at `args` (its residuals)."""
    import jax

    _, backward = jax.vjp(fn, *args)
    return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(backward) if hasattr(leaf, "nbytes"))


@jax_only
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("layer", ["layer_norm", "gelu"])
def test_backward_pass_keeps_only_the_input_and_row_statistics(layer, form, dtype, rng, monkeypatch):
    import jax.numpy as jnp

    from keras_mae.layers import fast_form

    monkeypatch.setattr(fast_form, "fast_form", lambda: form)
    x = jnp.asarray(rng.normal(size=(4, 50, 64)), dtype)
    if layer == "gelu":
        args, fn, statistics = (x,), layers.gelu, 0
    else:  # x itself, a float32 mean and 1 / std per row, gamma and beta
        args = (x, jnp.asarray(rng.normal(size=64), "float32"), jnp.asarray(rng.normal(size=64), "float32"))
        fn, statistics = (lambda x, g, b: layer_norm_module.layer_norm(x, g, b, 1e-6, dtype)), 2 * 4 * 50 * 4 + 2 * 64 * 4

    def kept():
        return _kept_bytes(fn, *args)

    assert kept() <= x.nbytes + statistics, kept()
    # Autodiff of the same forward keeps at least one more full-size tensor (LayerNorm: float32 copies of the centred
    # and the normalised x).
    assert _autodiff(monkeypatch, kept) >= kept() + x.nbytes


@jax_only
@pytest.mark.parametrize("form, fused", WRITTEN_ATTENTION)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_written_attention_keeps_q_k_and_v_not_the_probabilities(form, fused, dtype, rng, monkeypatch):
    import jax.numpy as jnp

    _written_attention(monkeypatch, form, fused)
    qkv = jnp.asarray(rng.normal(size=(4, 50, 3 * 64)), dtype)  # 4 heads of 16 over 50 tokens

    def kept():
        return _kept_bytes(lambda x: attention_module.attention(x, 4), qkv)

    assert kept() == qkv.nbytes, kept()  # q, k and v
    probabilities = 4 * 4 * 50 * 50 * 4  # float32
    assert _autodiff(monkeypatch, kept) >= kept() + probabilities


def test_the_fused_attention_switch_leaves_the_cpu_and_torch_alone(monkeypatch):
    from keras_mae.layers import fast_form

    monkeypatch.setattr(fast_form, "FUSED_ATTENTION", False)
    for form, fused in ((fast_form.XLA_CPU, False), (fast_form.TORCH, True), (fast_form.XLA_ACCELERATOR, False)):
        monkeypatch.setattr(fast_form, "fast_form", lambda form=form: form)
        assert fast_form.uses_fused_attention() is fused, form
    monkeypatch.setattr(fast_form, "FUSED_ATTENTION", True)
    assert fast_form.uses_fused_attention()  # accelerators' default
