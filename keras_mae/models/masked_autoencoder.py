"""MaskedAutoencoder: the asymmetric encoder-decoder of He et al. 2021 (arXiv 2111.06377)."""

import keras
import numpy as np
from keras import ops

from keras_mae.distribution import replica_position, torch_ddp
from keras_mae.layers.batch_gather import batch_gather
from keras_mae.layers.patching import patchify
from keras_mae.layers.pixel_normalization import are_pixels, fit_normalization, normalize_pixels
from keras_mae.layers.random_masking import RandomMasking
from keras_mae.models import train_step as steps
from keras_mae.models.image_size import grid_shape, image_shape
from keras_mae.models.init_arguments import init_arguments
from keras_mae.models.mae_decoder import MAEDecoder
from keras_mae.models.reconstruction import reconstruct
from keras_mae.models.vit_encoder import ViTEncoder


@keras.saving.register_keras_serializable(package="keras_mae")
class MaskedAutoencoder(keras.Model):
    """Masked Autoencoder with a ViT encoder, as facebookresearch/mae `MaskedAutoencoderViT`.

    The encoder sees only the visible patches; the decoder gets the encoded
    tokens plus mask tokens, unshuffled, and predicts every patch's pixels.
    `model.fit(images)` pretrains with the model's own `train_step` (labels,
    if given, are ignored); the loss is the official `forward_loss`.

    Args:
        image_size: int or (height, width). Divisible by `patch_size`.
        patch_size: int. Side of the square patches.
        num_channels: int. Image channels. Defaults to 3.
        hidden_dim, num_layers, num_heads, mlp_dim: int. Encoder size
            (ViT-B/16: 768, 12, 12, 3072).
        decoder_hidden_dim, decoder_num_layers, decoder_num_heads,
            decoder_mlp_dim: int. Decoder size (paper: 512, 8, 16, 2048).
        mask_ratio: float in [0, 1). Defaults to 0.75.
        norm_pix_loss: bool. Targets are per-patch normalised pixels. Defaults to False.
        mask_strategy: str. "random", "block" or "grid" (Table 1f). Defaults to "random".
        drop_path_rate: float. Encoder stochastic depth. Defaults to 0.
        layer_norm_epsilon: float. Defaults to 1e-6.
        seed: int or None. Seed of the masking noise.
        encode_mask_tokens: bool. Ablation (Table 1c): the encoder also sees
            mask tokens. Defaults to False, the paper's asymmetric design.
        eval_mask_seed: int or None. Seed of the masks `evaluate` (and
            `fit(validation_data=...)`) uses: the same for every evaluation,
            so validation losses compare across epochs and `EarlyStopping` /
            `ModelCheckpoint` watch a stable number; training masks are not
            affected. None draws evaluation masks from the training stream.
            Defaults to 0.
        mean, std: sequences of floats (1, 3 or 4, fitted to
            `num_channels` as the input pipelines do) or None for
            ImageNet's, in [0, 1] units: how uint8 input is normalised,
            `(pixels / 255 - mean) / std` in float32 inside the model's own
            step (on its device), as `make_pretrain_dataset(normalize=False)`
            expects. Float input is taken as normalised already. Defaults to
            None.

    Call arguments:
        images: (batch, height, width, num_channels): float, already
            normalised, or uint8 pixels, which the model normalises with
            `mean` and `std`.
        noise: optional (batch, num_patches) noise in [0, 1) fixing the masks.
        training: bool.

    Returns:
        Dict with `pred` (batch, num_patches, patch_size**2 * num_channels),
        `mask` (batch, num_patches; 1 = removed), `latent` (batch, 1 +
        num_kept, hidden_dim) and `ids_restore` (batch, num_patches).

    >>> import numpy as np
    >>> model = MaskedAutoencoder.from_preset("mae_vit_tiny_patch4_28", num_layers=1, decoder_num_layers=1)
    >>> tuple(model(np.zeros((2, 28, 28, 1), "float32"))["pred"].shape)
    (2, 49, 16)
    """

    def __init__(
        self,
        image_size,
        patch_size,
        num_channels=3,
        hidden_dim=768,
        num_layers=12,
        num_heads=12,
        mlp_dim=3072,
        decoder_hidden_dim=512,
        decoder_num_layers=8,
        decoder_num_heads=16,
        decoder_mlp_dim=2048,
        mask_ratio=0.75,
        norm_pix_loss=False,
        mask_strategy="random",
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        seed=None,
        encode_mask_tokens=False,
        eval_mask_seed=0,
        mean=None,
        std=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = image_shape(image_size)
        self.patch_size = int(patch_size)
        self.grid_size = grid_shape(self.image_size, self.patch_size)
        self.num_channels = int(num_channels)
        self.decoder_hidden_dim = int(decoder_hidden_dim)
        self.decoder_num_layers = int(decoder_num_layers)
        self.decoder_num_heads = int(decoder_num_heads)
        self.decoder_mlp_dim = int(decoder_mlp_dim)
        self.norm_pix_loss = bool(norm_pix_loss)
        if self.norm_pix_loss and self.patch_size**2 * self.num_channels < 2:
            raise ValueError(
                "norm_pix_loss needs at least 2 values per patch (patch_size**2 * num_channels); "
                f"received patch_size={patch_size}, num_channels={num_channels}. "
                "Use a larger patch or norm_pix_loss=False."
            )
        self.seed = seed
        if eval_mask_seed is not None and (isinstance(eval_mask_seed, bool) or not isinstance(eval_mask_seed, int)):
            raise ValueError(f"eval_mask_seed must be an int or None. Received: eval_mask_seed={eval_mask_seed!r}")
        self.eval_mask_seed = eval_mask_seed
        fit_normalization(mean, std, self.num_channels)  # a one-line error now rather than in the first step
        self.mean = None if mean is None else tuple(float(m) for m in np.ravel(mean))
        self.std = None if std is None else tuple(float(s) for s in np.ravel(std))

        self.encode_mask_tokens = bool(encode_mask_tokens)

        # === Layers ===
        self.encoder = ViTEncoder(
            self.image_size, self.patch_size, self.num_channels, hidden_dim, num_layers, num_heads, mlp_dim,
            drop_path_rate=drop_path_rate, layer_norm_epsilon=layer_norm_epsilon, dtype=self.dtype_policy,
            name="encoder",
        )
        self.masking = RandomMasking(
            mask_ratio, mask_strategy, self.grid_size, seed=seed, dtype=self.dtype_policy, name="masking"
        )
        if self.encode_mask_tokens:
            self.mask_token = self.add_weight(
                shape=(1, 1, self.encoder.hidden_dim), initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="mask_token",
            )
            object.__setattr__(self.encoder, "_legacy_mask_token", self.mask_token)  # old files kept it there
        self.decoder = MAEDecoder(
            self.grid_size, self.patch_size**2 * self.num_channels, self.decoder_hidden_dim,
            self.decoder_num_layers, self.decoder_num_heads, self.decoder_mlp_dim, layer_norm_epsilon,
            dtype=self.dtype_policy, name="decoder",
        )
        self.decoder.build((None, None, self.encoder.hidden_dim))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    # Encoder hyper-parameters live on the encoder; one source of truth.
    hidden_dim = property(lambda self: self.encoder.hidden_dim)
    num_layers = property(lambda self: self.encoder.num_layers)
    num_heads = property(lambda self: self.encoder.num_heads)
    mlp_dim = property(lambda self: self.encoder.mlp_dim)
    drop_path_rate = property(lambda self: self.encoder.drop_path_rate)
    layer_norm_epsilon = property(lambda self: self.encoder.layer_norm_epsilon)
    # Masking hyper-parameters live on the masking layer.
    mask_ratio = property(lambda self: self.masking.mask_ratio)
    mask_strategy = property(lambda self: self.masking.strategy)

    def normalize_inputs(self, images):
        """uint8 pixels -> float32 normalised by the model's `mean` and `std`; float images pass unchanged.

        Called up to three times a step (loss, `call`, targets): float input, from the first call on, returns after a
        dtype check, without fitting the statistics."""
        if not are_pixels(images):
            return images
        return normalize_pixels(images, *fit_normalization(self.mean, self.std, self.num_channels))

    def call(self, images, noise=None, training=False):
        tokens = self.encoder.embed(self.normalize_inputs(images))  # [B, L, D]
        if self.encode_mask_tokens:
            tokens, mask, ids_restore = self._with_mask_tokens(tokens, noise)  # [B, L, D]
        else:
            tokens, mask, ids_restore = self.masking(tokens, noise=noise)  # [B, L_keep, D]
        latent = self.encoder.encode(tokens, training=training)  # [B, 1 + L_keep, D]
        pred = self.decoder(latent, ids_restore, training=training)
        return {"pred": pred, "mask": mask, "latent": latent, "ids_restore": ids_restore}

    def load_own_variables(self, store):
        if self.encode_mask_tokens and not len(store.keys()):  # keras_mae 0.1: the encoder held the mask token
            return
        super().load_own_variables(store)

    def _with_mask_tokens(self, tokens, noise):
        """The Table 1c ablation: every token, removed ones replaced by the mask token (+ position), shuffled.

        Shuffled (kept first) so the decoder's unshuffle by `ids_restore` works
        unchanged, with zero mask tokens of its own to append.
        """
        _, mask, ids_restore = self.masking(tokens, noise=noise)
        filled = ops.cast(self.mask_token, tokens.dtype) + ops.cast(self.encoder.pos_embed[:, 1:], tokens.dtype)
        tokens = ops.where(mask[..., None] > 0, filled, tokens)
        return batch_gather(tokens, ops.argsort(ids_restore, axis=1)), mask, ids_restore

    def patch_targets(self, images):
        """Per-patch targets (batch, num_patches, patch_dim) in float32, normalised if norm_pix_loss.

        Also returns each patch's mean and unbiased variance (None without norm_pix_loss).
        """
        target = patchify(ops.cast(self.normalize_inputs(images), "float32"), self.patch_size)
        if not self.norm_pix_loss:
            return target, None, None
        n = ops.shape(target)[-1]
        mean = ops.mean(target, axis=-1, keepdims=True)
        var = ops.var(target, axis=-1, keepdims=True) * (n / (n - 1))  # torch's .var is unbiased
        return (target - mean) / ops.sqrt(var + 1e-6), mean, var

    def reconstruction_loss(self, images, pred, mask):
        """The official `forward_loss`: per-patch MSE averaged over removed patches only.

        Args:
            images: (batch, height, width, num_channels) normalised images.
            pred: (batch, num_patches, patch_dim) predictions.
            mask: (batch, num_patches), 1 = removed.

        Returns:
            Scalar float32 loss.
        """
        target, _, _ = self.patch_targets(images)
        per_patch = ops.mean(ops.square(ops.cast(pred, "float32") - target), axis=-1)
        mask = ops.cast(mask, "float32")
        # max(.., 1) only matters at mask_ratio 0, where the official code divides by zero.
        return ops.sum(per_patch * mask) / ops.maximum(ops.sum(mask), 1.0)

    def compute_reconstruction_loss(self, images, training=False, noise=None):
        """Forward pass and loss in one call; what `train_step` differentiates."""
        images = self.normalize_inputs(images)
        outputs = self(images, noise=noise, training=training)
        return self.reconstruction_loss(images, outputs["pred"], outputs["mask"])

    def evaluation_noise(self, images):
        """The masking noise of `test_step`: fixed by `eval_mask_seed` (None: the training stream's)."""
        if self.eval_mask_seed is None:
            return self.replica_noise(images)
        return self.replica_noise(images, seed=self.eval_mask_seed)

    def replica_noise(self, images, seed=None):
        """The masking noise of this replica's `images` when replicas share a global batch, else None.

        Drawn for the whole global batch (from the layer's stream, or `seed`), of which this replica takes its
        rows: replicas mask differently, and as one process would. With one replica and no seed, None (the
        masking layer draws its own, as before).
        """
        index, count = replica_position()
        if count == 1 and seed is None:
            return None
        batch, length = ops.shape(images)[0], self.encoder.num_patches
        noise = self.masking.sample_noise(batch * count, length, seed=seed)
        return noise if count == 1 else ops.slice(noise, [index * batch, 0], [batch, length])

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                **kwargs):
        """`keras.Model.compile` without `loss`, `loss_weights`, `metrics` or `weighted_metrics`.

        The model computes its own loss (the official masked-patch MSE, on normalised patches with
        `norm_pix_loss`), so a loss or metrics given here would be silently ignored: they are refused instead.
        Metrics beyond the loss come from callbacks, e.g. `keras_mae.callbacks.KNNMonitor`.

        `jit_compile=True` on the torch backend runs the train step's forward and backward passes as one graph
        traced with `make_fx` and compiled by TorchInductor (`keras_mae/models/torch_captured_step.py`): the same
        losses and weights as the eager step, without Keras's per-op Python; it needs `drop_path_rate=0`.
        """
        given = {name: value for name, value in (("loss", loss), ("loss_weights", loss_weights), ("metrics", metrics),
                                                 ("weighted_metrics", weighted_metrics)) if value is not None}
        if given:
            received = ", ".join(f"{name}={value!r}" for name, value in given.items())
            raise ValueError(
                f"MaskedAutoencoder computes its own loss (the masked-patch reconstruction MSE; norm_pix_loss picks "
                f"its target), so compile takes only an optimizer and the training options. Received: {received}. "
                "Drop them; for other metrics use callbacks (keras_mae.callbacks.KNNMonitor).")
        super().compile(optimizer=optimizer, **kwargs)
        self._captured_gradients = None
        if keras.backend.backend() == "torch" and self.jit_compile is True:
            from keras_mae.models.torch_captured_step import check_capturable

            check_capturable(self)

    def _should_torch_compile(self):
        """Keras's torch trainer never `torch.compile`s this model's steps: with `jit_compile=True` the train step
        runs as a traced graph instead (`torch_captured_step`), the test step eagerly."""
        return False

    def compile_from_config(self, config):
        """Compiles a loaded `.keras` file's model as it was saved (what Keras does for a model whose `compile` it
        does not override); a loss or metrics in an older file's config, which never applied, are dropped."""
        config = keras.saving.deserialize_keras_object(config)
        for name in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            config.pop(name, None)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)  # its variables, for the saved values to load into

    def fit(self, *args, **kwargs):
        steps.refuse_weights(kwargs)  # before any step runs (a failed jitted step leaves JAX's state detached)
        steps.refuse_uint8_where_collectives_cannot(self, args[0] if args else kwargs.get("x"))
        return super().fit(*args, **_with_data_parallel(kwargs))

    def evaluate(self, *args, **kwargs):
        steps.refuse_weights(kwargs)
        steps.refuse_uint8_where_collectives_cannot(self, args[0] if args else kwargs.get("x"))
        return super().evaluate(*args, **_with_data_parallel(kwargs))

    def train_step(self, *args):
        return steps.train_step(self, *args)

    def test_step(self, *args):
        return steps.test_step(self, *args)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def reconstruct(self, images, noise=None):
        """Reconstructions in image space, as the official visualisation demo: see `reconstruction.reconstruct`."""
        return reconstruct(self, images, noise)

    # Built-in preset names: {name: {description, params, image_size, patch_size, num_channels}}, sizes by arithmetic.
    from keras_mae.models.preset_io import builtin_presets as _builtin_presets
    presets = _builtin_presets("MaskedAutoencoder")
    del _builtin_presets

    @classmethod
    def from_preset(cls, name, **overrides):
        """A MaskedAutoencoder from a built-in preset name, a preset folder, a `.keras` file, a workdir or a hub handle.

        A built-in name (`MaskedAutoencoder.presets`) builds that architecture with random weights, any argument
        overridden. Anything else loads its config and weights: a folder from `save_to_preset` (keras-hub's
        layout), a `.keras` file, a pretraining workdir (its final model, else its newest complete checkpoint),
        an official / Hugging Face checkpoint (`keras_mae.checkpoints.load_model`), or with keras-hub installed
        an `hf://owner/name` or `kaggle://...` handle. Overrides may then set what leaves the weights as they
        are (`mask_ratio`, `norm_pix_loss`, `mask_strategy`, `drop_path_rate`, `seed`, `image_size`, ...);
        architecture arguments (`hidden_dim`, `num_layers`, ...) are refused.

        e.g. `MaskedAutoencoder.from_preset("mae_vit_base_patch16", norm_pix_loss=True)`,
        `MaskedAutoencoder.from_preset("runs/fashion_mnist", mask_ratio=0.5)`.
        """
        from keras_mae.models.preset_io import from_preset

        return from_preset(cls, name, **overrides)

    def save_to_preset(self, preset_dir):
        """Writes config.json, model.weights.h5 and metadata.json (keras-hub's layout) for `from_preset`."""
        from keras_mae.models.preset_io import save_to_preset

        save_to_preset(self, preset_dir)

    def get_config(self):
        return {**super().get_config(), **init_arguments(self)}


def _with_data_parallel(fit_arguments):
    """`fit` / `evaluate` keyword arguments with a `TorchDataParallel` first in the callbacks under torch DDP."""
    callbacks = fit_arguments.get("callbacks")
    if not torch_ddp.active() or isinstance(callbacks, keras.callbacks.CallbackList):  # fit's own validation
        return fit_arguments
    callbacks = list(callbacks or [])
    if not any(isinstance(c, torch_ddp.TorchDataParallel) for c in callbacks):
        callbacks.insert(0, torch_ddp.TorchDataParallel())  # first: the callbacks after it see averaged metrics
    return {**fit_arguments, "callbacks": callbacks}
