"""Shared fixtures: a tiny MAE config that builds and trains in well under a second."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

TINY = dict(
    image_size=(8, 12), patch_size=4, num_channels=3, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32,
    decoder_hidden_dim=8, decoder_num_layers=1, decoder_num_heads=2, decoder_mlp_dim=16,
)


@pytest.fixture
def tiny_config():
    return dict(TINY)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _reset_keras():
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
