"""Feature-extraction rate of the linear probe (`LinearProbe.extract_features`, mean pool) on the demo preset.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/probe_features.py 5120 512   # images, batch size

Random 28x28x1 inputs through a tf.data pipeline, the compiled predict path the app uses; one warm-up of 2
batches, then one timed pass over all images.
"""
import os, sys, time
import numpy as np, keras, tensorflow as tf
from keras_mae import ViTEncoder
from keras_mae.models.linear_probe import LinearProbe
n = int(sys.argv[1]); bs = int(sys.argv[2])
enc = ViTEncoder.from_preset("mae_vit_tiny_patch4_28")
probe = LinearProbe(enc, num_classes=10, pool="mean")
x = np.random.default_rng(0).normal(size=(n, 28, 28, 1)).astype("float32")
ds = tf.data.Dataset.from_tensor_slices((x, np.arange(n))).batch(bs)
probe.extract_features(ds.take(2), verbose=0)
t = time.time(); f, _ = probe.extract_features(ds, verbose=0); dt = time.time() - t
print(keras.backend.backend(), "bs", bs, f"{n/dt:.0f} img/s", f.shape)
