"""Parity with a PyTorch reference (Hugging Face ViTMAEForPreTraining) given the same weights and noise."""

import numpy as np
import pytest
from keras import ops

import keras_mae

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.hf_reference import build_hf_mae, hf_to_official  # noqa: E402


@pytest.mark.parametrize("norm_pix_loss", [False, True])
# HF ViTMAE builds square grids only; non-square layouts are covered by tests/test_layers.py.
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
