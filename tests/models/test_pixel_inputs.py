"""uint8 pixels into a MaskedAutoencoder: normalised in its own step, as the input pipeline would on the host."""

import os

import keras
import numpy as np
import pytest

from keras_mae import MaskedAutoencoder
from keras_mae.layers.pixel_normalization import normalize_pixels, scale_and_offset

MEAN, STD = (0.3, 0.45, 0.5), (0.2, 0.25, 0.3)


def _pixels(config, n=8, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, *config["image_size"], 3)).astype("uint8")


def _normalised(pixels):
    scale, offset = scale_and_offset(MEAN, STD)
    return pixels.astype("float32") * scale + offset


def _fit(config, images, jit_compile="auto"):
    keras.utils.set_random_seed(0)
    model = MaskedAutoencoder(**config, norm_pix_loss=False, seed=3, mean=MEAN, std=STD)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), jit_compile=jit_compile)
    losses = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
    model.fit(images, batch_size=4, shuffle=False, epochs=2, verbose=0, callbacks=[record])
    return np.array(losses), [keras.ops.convert_to_numpy(v) for v in model.weights]


def test_uint8_pixels_train_as_their_normalised_floats(tiny_config):
    pixels = _pixels(tiny_config)
    losses, weights = _fit(tiny_config, pixels)
    expected_losses, expected_weights = _fit(tiny_config, _normalised(pixels))
    # The same float32 map on the device as on the host; where a compiler fuses it the last bit may differ, which
    # Adam's first steps make up to ~1e-5 of a weight whose gradient is rounding noise (the attention key biases).
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for value, expected in zip(weights, expected_weights):
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=2e-5)
    assert not np.allclose(losses, _fit(tiny_config, pixels.astype("float32") / 255)[0])  # the map matters


def test_statistics_travel_with_the_saved_model(tiny_config, tmp_path):
    model = MaskedAutoencoder(**tiny_config, mean=MEAN, std=[0.25])
    config = model.get_config()
    assert (config["mean"], config["std"]) == (MEAN, (0.25,))
    assert MaskedAutoencoder.from_config(config).get_config() == config
    pixels = _pixels(tiny_config, n=2)
    noise = np.random.default_rng(2).random((2, model.encoder.num_patches)).astype("float32")
    path = os.path.join(tmp_path, "mae.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loss = keras.ops.convert_to_numpy(loaded.compute_reconstruction_loss(pixels, noise=noise))
    scale, offset = scale_and_offset(MEAN, (0.25,) * 3)
    floats = pixels.astype("float32") * scale + offset
    np.testing.assert_allclose(loss, keras.ops.convert_to_numpy(model.compute_reconstruction_loss(floats, noise=noise)),
                               rtol=1e-6)
    # ImageNet's statistics without any: a model built before these arguments normalises as the pipelines did.
    default = MaskedAutoencoder(**tiny_config)
    assert (default.mean, default.std) == (None, None)
    imagenet = keras.ops.convert_to_numpy(default.normalize_inputs(keras.ops.convert_to_tensor(pixels)))
    np.testing.assert_allclose(imagenet[..., 0], (pixels[..., 0] / 255 - 0.485) / 0.229, rtol=1e-5, atol=1e-6)


def test_reconstruct_and_call_take_pixels(tiny_config):
    model = MaskedAutoencoder(**tiny_config, mean=MEAN, std=STD, norm_pix_loss=True)
    pixels = _pixels(tiny_config, n=2)
    noise = np.random.default_rng(3).random((2, model.encoder.num_patches)).astype("float32")
    from_pixels = model.reconstruct(pixels, noise=noise)
    from_floats = model.reconstruct(_normalised(pixels), noise=noise)
    for key in from_floats:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(from_pixels[key]),
                                   keras.ops.convert_to_numpy(from_floats[key]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(pixels, noise=noise)["pred"]),
                               keras.ops.convert_to_numpy(model(_normalised(pixels), noise=noise)["pred"]),
                               rtol=1e-5, atol=1e-5)


def test_other_integer_pixels_and_bad_statistics_are_refused(tiny_config):
    model = MaskedAutoencoder(**tiny_config)
    with pytest.raises(ValueError, match="Received dtype uint16: convert them to uint8"):
        model.compute_reconstruction_loss(np.zeros((2, *tiny_config["image_size"], 3), "uint16"))
    with pytest.raises(ValueError, match=r"std must be positive. Received: std=\[0.2, 0.0, 0.2\]"):
        MaskedAutoencoder(**tiny_config, std=[0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match="1, 3 or 4 values"):
        MaskedAutoencoder(**tiny_config, mean=[0.5, 0.5])
    floats = np.zeros((1, 2, 3), "float32")
    assert normalize_pixels(floats, [0.5], [0.5]) is floats  # model inputs already: untouched


MULTI_WORKER = """
import numpy as np, tensorflow as tf, keras
from keras_mae import MaskedAutoencoder
from keras_mae.distribution import takes_uint8_batches
strategy = tf.distribute.MultiWorkerMirroredStrategy()
assert not takes_uint8_batches(strategy) and takes_uint8_batches(tf.distribute.MirroredStrategy(["/cpu:0"]))
with strategy.scope():
    model = MaskedAutoencoder(**{config!r})
    model.compile(optimizer="adamw")
pixels = np.zeros((4, 8, 12, 3), "uint8")
for run in (model.fit, model.evaluate):
    try:
        run(tf.data.Dataset.from_tensor_slices(pixels).batch(2), verbose=0)
    except ValueError as error:
        print("REFUSED", error)
model.fit(tf.data.Dataset.from_tensor_slices(pixels.astype("float32")).batch(2), verbose=0)
print("FLOAT TRAINED")
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute's multi-worker strategy")
def test_uint8_batches_under_multi_worker_tf_distribute_are_refused_in_one_line_by_fit_and_evaluate(tiny_config):
    # Keras's TF trainer averages the first batch over the workers with a collective that takes no uint8; the app
    # normalises on the host there. Its own process: a multi-worker strategy sets up TensorFlow's collectives.
    import subprocess
    import sys

    script = MULTI_WORKER.format(config=tiny_config)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert result.returncode == 0, result.stderr[-3000:]
    refused = [line for line in result.stdout.splitlines() if line.startswith("REFUSED")]
    assert refused == 2 * ["REFUSED MaskedAutoencoder cannot take uint8 batches under tf.distribute's "
                       "MultiWorkerMirroredStrategy or TPUStrategy: Keras's TensorFlow trainer averages the first "
                       "batch over the workers with a collective that takes no uint8. Normalise on the host instead "
                       "(make_pretrain_dataset(..., normalize=True), the default)."]
    assert "FLOAT TRAINED" in result.stdout
