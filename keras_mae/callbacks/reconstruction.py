"""Reconstruction image summaries: original | masked | reconstruction | reconstruction + visible."""

import os

import keras
import numpy as np

from keras_mae.utils.image_grid import reconstruction_grid, upscale, write_png


class ReconstructionSummary(keras.callbacks.Callback):
    """Every `every_n_epochs` epochs, and after the last one, reconstructs a fixed batch under fixed masks.

    Writes the grid (one row per image: original | masked | reconstruction |
    reconstruction with the visible patches pasted back, in display pixels)
    with `tf.summary.image` under `log_dir` (TensorFlow is always installed,
    so this works on every backend) and as `png_dir/epoch_NNNN.png`.

    Args:
        images: float array (n, height, width, channels), normalised like the training data.
        mean, std: per-channel normalisation, to show display pixels.
        log_dir: str or None. TensorBoard directory.
        png_dir: str or None. PNG directory.
        every_n_epochs: int. Defaults to 1.
        seed: int. Seed of the fixed masking noise. Defaults to 0.
    """

    def __init__(self, images, mean, std, log_dir=None, png_dir=None, every_n_epochs=1, seed=0):
        super().__init__()
        self.images = np.asarray(images, "float32")
        self.mean, self.std = mean, std
        self.log_dir, self.png_dir = log_dir, png_dir
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self._writer = None
        self.last_png = None
        self._epoch = self._written = None

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch + 1
        if (epoch + 1) % self.every_n_epochs == 0:
            self.write(epoch + 1)

    def write(self, epoch):
        self._written = epoch
        model = self.model
        noise = np.random.default_rng(self.seed).random((len(self.images), model.encoder.num_patches)).astype("float32")
        out = {k: keras.ops.convert_to_numpy(v) for k, v in model.reconstruct(self.images, noise=noise).items()}
        grid = reconstruction_grid(self.images, out, self.mean, self.std)  # uint8 [H, W, C]
        grid = upscale(grid, max(1, 96 // self.images.shape[1]))  # small images stay visible
        if self.png_dir:
            os.makedirs(self.png_dir, exist_ok=True)
            self.last_png = os.path.join(self.png_dir, f"epoch_{epoch:04d}.png")
            write_png(self.last_png, grid)
        if self.log_dir:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                tf.summary.image("reconstructions", grid[None], step=epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._epoch is not None and self._written != self._epoch:  # the last epoch's figure, whatever every_n_epochs
            self.write(self._epoch)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
