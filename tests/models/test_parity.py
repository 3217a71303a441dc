"""Parity with a PyTorch reference (Hugging Face ViTMAEForPreTraining) given the same weights and noise."""

import numpy as np
import pytest
from keras import ops

import keras_mae

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.hf_reference import build_hf_mae, hf_to_official  # noqa: E402


@pytest.mark.parametrize("norm_pix_loss", [False, True])
# HF ViTMAE builds square grids only; non-square layouts are covered by tests/layers/test_layers.py.
@pytest.mark.parametrize("image_size, num_channels", [((8, 8), 3), ((12, 12), 1)])
def test_forward_and_loss_match_reference(tiny_config, image_size, num_channels, norm_pix_loss, rng):
    import torch

    config = {**tiny_config, "image_size": image_size, "num_channels": num_channels}
    reference = build_hf_mae(config, norm_pix_loss)
    state_dict = hf_to_official(reference)
    assert np.abs(state_dict["pos_embed"][0, 1:]).sum() > 0 and np.abs(state_dict["mask_token"]).sum() > 0

    model = keras_mae.MaskedAutoencoder(**config, norm_pix_loss=norm_pix_loss)
    keras_mae.checkpoints.load_official_weights(model, state_dict)

    num_patches = (image_size[0] // 4) * (image_size[1] // 4)
    images = rng.normal(size=(3, *image_size, num_channels)).astype("float32")
    noise = rng.random((3, num_patches)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2)), noise=torch.from_numpy(noise))
    outputs = model(images, noise=noise)
    loss = model.reconstruction_loss(images, outputs["pred"], outputs["mask"])

    np.testing.assert_array_equal(ops.convert_to_numpy(outputs["mask"]), expected.mask.numpy())
    np.testing.assert_array_equal(ops.convert_to_numpy(outputs["ids_restore"]), expected.ids_restore.numpy())
    np.testing.assert_allclose(ops.convert_to_numpy(outputs["pred"]), expected.logits.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), expected.loss.item(), atol=1e-4, rtol=1e-4)
    # The comparison is not vacuous: another noise gives another answer.
    other = model(images, noise=rng.random((3, num_patches)).astype("float32"))["pred"]
    assert np.abs(ops.convert_to_numpy(other) - expected.logits.numpy()).max() > 1e-2


def test_one_fit_step_is_sgd_on_the_reference_gradient(tiny_config, rng):
    """`fit`'s train step (gradients, optimizer update) on every backend equals one SGD step of the reference."""
    import keras
    import torch

    config = {**tiny_config, "image_size": (8, 8)}  # HF ViTMAE builds square grids only
    reference = build_hf_mae(config, norm_pix_loss=True)
    initial = {key: np.array(value, copy=True) for key, value in hf_to_official(reference).items()}
    model = keras_mae.MaskedAutoencoder(**config, norm_pix_loss=True)
    keras_mae.checkpoints.load_official_weights(model, initial)
    images = rng.normal(size=(4, 8, 8, config["num_channels"])).astype("float32")
    # The noise fit's step will draw: sample it, then rewind the masking's seed generator.
    seed_state = ops.convert_to_numpy(model.masking.seed_generator.state)
    noise = ops.convert_to_numpy(model.masking.sample_noise(4, model.encoder.num_patches))
    model.masking.seed_generator.state.assign(seed_state)

    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    history = model.fit(images, batch_size=4, epochs=1, shuffle=False, verbose=0)

    output = reference(torch.from_numpy(images.transpose(0, 3, 1, 2)), noise=torch.from_numpy(noise))
    output.loss.backward()
    with torch.no_grad():
        for param in reference.parameters():
            if param.grad is not None:
                param -= 0.5 * param.grad
    expected = hf_to_official(reference)
    stepped = keras_mae.checkpoints.export_official_weights(model)
    assert history.history["loss"][0] == pytest.approx(output.loss.item(), rel=1e-5)
    moved = 0
    for key, value in expected.items():
        np.testing.assert_allclose(stepped[key], value, atol=2e-5, err_msg=key)
        moved += not np.allclose(value, initial[key])
    assert moved > 20  # the step moved the weights, so the comparison is not vacuous
