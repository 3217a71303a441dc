"""Files saved by an earlier keras_mae (tests/fixtures/saved_by_0_1) load with today's code and give the same outputs."""

import os

import keras
import numpy as np

from keras_mae import MaskedAutoencoder, ViTEncoder

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "saved_by_0_1")


def expected():
    with np.load(os.path.join(DATA, "expected_outputs.npz")) as f:
        return {key: f[key] for key in f.files}


def test_mae_files_load_with_the_same_outputs():
    want = expected()
    for name in ("mae", "mae_mask_tokens"):
        model = keras.saving.load_model(os.path.join(DATA, f"{name}.keras"))
        assert isinstance(model, MaskedAutoencoder)
        assert model.encode_mask_tokens == (name == "mae_mask_tokens")
        outputs = model(want["images"], noise=want["noise"])
        for key in ("pred", "mask", "latent"):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs[key]), want[f"{name}_{key}"], atol=1e-5,
                                       err_msg=f"{name} {key}")


def test_encoder_file_loads_with_the_same_tokens():
    want = expected()
    encoder = keras.saving.load_model(os.path.join(DATA, "encoder.keras"))
    assert isinstance(encoder, ViTEncoder)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(encoder(want["images"])), want["encoder_tokens"], atol=1e-5)
