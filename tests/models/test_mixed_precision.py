"""Mixed precision: a bfloat16 step matches float32 closely; float16 trains with loss scaling."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_mae


def build(tiny_config, policy):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = keras_mae.MaskedAutoencoder(**tiny_config, norm_pix_loss=True, seed=0)
    keras.config.set_dtype_policy("float32")
    return model


def test_bfloat16_step_matches_float32(tiny_config):
    images = np.random.default_rng(0).normal(size=(8, 8, 12, 3)).astype("float32")
    noise = np.random.default_rng(1).random((8, 6)).astype("float32")
    reference, mixed = build(tiny_config, "float32"), build(tiny_config, "mixed_bfloat16")
    mixed.set_weights(reference.get_weights())
    assert mixed.compute_dtype == "bfloat16" and all(v.dtype == "float32" for v in mixed.weights)

    losses = [float(ops.convert_to_numpy(m.reconstruction_loss(images, **{k: m(images, noise=noise)[k] for k in ("pred", "mask")})))
              for m in (reference, mixed)]
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)
    assert ops.convert_to_numpy(mixed(images, noise=noise)["pred"]).dtype == "bfloat16"

    for model in (reference, mixed):
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit(images, batch_size=8, epochs=1, shuffle=False, verbose=0)
    before = [np.asarray(w) for w in build(tiny_config, "float32").get_weights()]
    for b, r, m in zip(before, reference.get_weights(), mixed.get_weights()):
        step = np.abs(r - b).max()
        if step > 0:
            assert np.abs(m - r).max() <= 0.1 * step + 1e-4


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="XLA:CPU has no float16 dot with float32 accumulation")
def test_float16_uses_loss_scaling_and_trains(tiny_config):
    model = build(tiny_config, "mixed_float16")
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    images = np.random.default_rng(0).normal(size=(8, 8, 12, 3)).astype("float32")
    before = [np.array(w) for w in model.get_weights()]
    loss = model.fit(images, batch_size=4, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(loss).all()
    assert sum(not np.array_equal(b, a) for b, a in zip(before, model.get_weights())) > 10
