"""`jit_compile=True` trains as the eager step does: the torch backend's captured step, XLA elsewhere."""

import keras
import numpy as np
import pytest

from keras_mae import MaskedAutoencoder
from keras_mae.optimizers import make_pretrain_optimizer

torch_only = pytest.mark.skipif(keras.backend.backend() != "torch", reason="the captured step is torch's")


def _train(config, jit_compile, compiler=None, steps=4, batch_size=4, dtype_policy="float32", **compile_args):
    """(losses per step, weights and optimizer variables after `steps` steps, model) of a fixed tiny run."""
    keras.config.set_dtype_policy(dtype_policy)
    keras.utils.set_random_seed(0)
    model = MaskedAutoencoder(**config, norm_pix_loss=True, seed=3)
    model.compile(optimizer=make_pretrain_optimizer(model, 1e-2, **compile_args), jit_compile=jit_compile)
    if compiler is not None:
        from keras_mae.models.torch_captured_step import CapturedGradients

        model._captured_gradients = CapturedGradients(model, compiler)
    images = np.random.default_rng(1).normal(size=(steps * batch_size, *config["image_size"], 3)).astype("float32")
    losses = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
    model.fit(images, batch_size=batch_size, shuffle=False, epochs=1, verbose=0, callbacks=[record])
    state = [keras.ops.convert_to_numpy(v) for v in [*model.weights, *model.optimizer.variables]]
    return np.array(losses), state, model


@torch_only
@pytest.mark.parametrize("dtype_policy", ["float32", "mixed_bfloat16"])
def test_traced_graph_trains_exactly_as_the_eager_step(tiny_config, dtype_policy):
    # The same ATen ops in the same order: bitwise the same losses, weights, moments and seed-generator states.
    plain_losses, plain_state, _ = _train(tiny_config, False, dtype_policy=dtype_policy)
    losses, state, model = _train(tiny_config, True, compiler="fx", dtype_policy=dtype_policy)
    np.testing.assert_array_equal(losses, plain_losses)
    assert len(state) == len(plain_state)
    for value, expected in zip(state, plain_state):
        np.testing.assert_array_equal(value, expected)
    assert len(model._captured_gradients._graphs) == 1  # traced once for the four steps
    assert model.jit_compile is True


def _assert_trained_alike(tiny_config, compile_args, check=None):
    """jit_compile=True and False runs: the same losses to float32 rounding, and each variable's change over the
    run the same to 1% (bf16's tolerance) in norm. But for the key bias: softmax ignores it, so its gradient is
    rounding noise alone (~1e-9, in any implementation), which Adam scales up to the learning rate."""
    keras.utils.set_random_seed(0)
    reference = MaskedAutoencoder(**tiny_config, norm_pix_loss=True, seed=3)
    initial = [keras.ops.convert_to_numpy(v) for v in reference.weights]
    paths = [v.path for v in reference.weights]
    plain_losses, plain_state, _ = _train(tiny_config, False, **compile_args)
    losses, state, model = _train(tiny_config, True, **compile_args)
    if check:
        check(model)
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-5)
    paths += [v.path for v in model.optimizer.variables]
    starts = initial + [np.zeros_like(v) for v in state[len(initial):]]  # optimizer variables start at zero
    for path, value, expected, start in zip(paths, state, plain_state, starts):
        if path.endswith("qkv/bias"):
            value, expected, start = (np.delete(x, np.s_[x.size // 3: 2 * x.size // 3]) for x in
                                      (value, expected, start))
        assert np.linalg.norm(value - expected) <= 1e-2 * np.linalg.norm(expected - start) + 1e-7, path


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="torch's jit_compile: the tests around")
def test_xla_compiled_step_trains_as_the_eager_step(tiny_config):
    # jit_compile=True on jax and tensorflow is XLA's, drop path included; the captured step is torch's alone.
    if keras.backend.backend() == "jax":  # TensorFlow's stateless RNG draws other masks under XLA (its algorithm)
        _assert_trained_alike(tiny_config, {})
    model = MaskedAutoencoder(**tiny_config, drop_path_rate=0.1)
    model.compile(optimizer="adamw", jit_compile=True)
    assert np.isfinite(model.fit(np.zeros((4, *tiny_config["image_size"], 3)), verbose=0).history["loss"][0])


@torch_only
def test_inductor_compiled_step_trains_as_the_eager_step(tiny_config):
    import torch

    # One step's gradients: float32 rounding apart (fused kernels sum in another order).
    _, _, model = _train(tiny_config, False, steps=1)
    images = torch.from_numpy(np.random.default_rng(2).normal(size=(4, *tiny_config["image_size"], 3)).astype("f"))
    seed_state = model.masking.seed_generator.state
    saved = keras.ops.convert_to_numpy(seed_state)
    for v in model.trainable_variables:
        v.value.grad = None
    with torch.enable_grad():
        model.compute_reconstruction_loss(images, training=True).backward()
    expected = [keras.ops.convert_to_numpy(v.value.grad) for v in model.trainable_variables]
    seed_state.assign(saved)  # the same masks again
    from keras_mae.models.torch_captured_step import CapturedGradients

    grads, _ = CapturedGradients(model, "inductor")(images)
    for grad, want in zip(grads, expected):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(grad), want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    # Steps with Adam, with gradient accumulation too.
    for compile_args in ({}, {"gradient_accumulation_steps": 2}):
        _assert_trained_alike(tiny_config, compile_args,
                              lambda model: model._captured_gradients.compiler == "inductor" or pytest.fail())


@torch_only
def test_a_new_batch_shape_is_traced_anew(tiny_config):
    model = MaskedAutoencoder(**tiny_config, seed=0)
    model.compile(optimizer="adamw", jit_compile=True)
    from keras_mae.models.torch_captured_step import CapturedGradients

    model._captured_gradients = CapturedGradients(model, "fx")
    images = np.zeros((6, *tiny_config["image_size"], 3), "float32")
    model.fit(images, batch_size=4, epochs=1, verbose=0)  # batches of 4 and 2
    assert sorted(key[0][0] for key in model._captured_gradients._graphs) == [2, 4]


@torch_only
def test_without_inductor_the_traced_graph_runs_and_says_so(tiny_config, monkeypatch, caplog):
    import torch

    def no_compiler(graph, **kwargs):
        def fails(*args):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return fails

    monkeypatch.setattr(torch, "compile", no_compiler)
    plain_losses, plain_state, _ = _train(tiny_config, False)
    with caplog.at_level("WARNING"):
        losses, state, _ = _train(tiny_config, True)
    (line,) = [r.getMessage() for r in caplog.records if "TorchInductor" in r.getMessage()]
    assert "RuntimeError: no C++ compiler found)" in line
    np.testing.assert_array_equal(losses, plain_losses)


@torch_only
def test_drop_path_is_refused_with_the_fix(tiny_config):
    model = MaskedAutoencoder(**tiny_config, drop_path_rate=0.1)
    with pytest.raises(ValueError, match=r"drop_path_rate=0.1\. Use drop_path_rate=0 .* or jit_compile=False"):
        model.compile(optimizer="adamw", jit_compile=True)
    model.compile(optimizer="adamw", jit_compile=False)  # the eager step takes it


@torch_only
def test_uint8_pixels_are_normalised_inside_the_traced_graph(tiny_config):
    # The normalisation is traced with the rest: the same ATen ops as the eager step, bitwise.
    pixels = np.random.default_rng(4).integers(0, 256, (8, *tiny_config["image_size"], 3)).astype("uint8")
    runs = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        model = MaskedAutoencoder(**tiny_config, seed=3, mean=(0.3, 0.4, 0.5), std=(0.2, 0.3, 0.25))
        model.compile(optimizer=make_pretrain_optimizer(model, 1e-2), jit_compile=jit_compile)
        if jit_compile:
            from keras_mae.models.torch_captured_step import CapturedGradients

            model._captured_gradients = CapturedGradients(model, "fx")
        history = model.fit(pixels, batch_size=4, shuffle=False, epochs=1, verbose=0)
        runs.append((history.history["loss"], [keras.ops.convert_to_numpy(v) for v in model.weights]))
    assert runs[0][0] == runs[1][0]
    for value, expected in zip(runs[1][1], runs[0][1]):
        np.testing.assert_array_equal(value, expected)
    assert [key[1] for key in model._captured_gradients._graphs] == [keras.ops.convert_to_tensor(pixels).dtype]
