"""MAE reconstruction figures: original | masked | reconstruction | reconstruction + visible, one PNG per image;
with --attention, attention maps instead: original | the last block's CLS attention | attention rollout.

    python apps/visualize.py --checkpoint=mae_visualize_vit_large.pth --images=photos/ --output_dir=figures/
    python apps/visualize.py --checkpoint=runs/fmnist --images=samples/ --output_dir=figures/
    python apps/visualize.py --checkpoint=runs/fmnist --images=samples/ --output_dir=figures/ --attention

--checkpoint takes an official facebookresearch/mae file (.pth, or .safetensors / .npz in its layout), a
Hugging Face ViTMAE directory, a `.keras` file, or a workdir of apps/pretrain.py (model.keras + run.json,
whose mean/std are used). Images are resized to the model's image size (or --image_size) without cropping,
as the official demo. The masks are fixed by --seed, so figures are comparable across checkpoints.
Attention maps are of the whole, unmasked image and need only an encoder: any checkpoint with one works
(a pretrained or fine-tuned ViT too). The CLS attention is averaged over the heads; the rollout
(Abnar & Zuidema 2020) multiplies the blocks' head-averaged attention plus the identity.
"""

import os

import common
from absl import app, flags

flags.DEFINE_string(
    "checkpoint", None, "Official/HF/timm checkpoint file or directory, a .keras file or a pretraining workdir.",
    required=True)
flags.DEFINE_list("images", None, "Image files and/or folders of images.", required=True)
flags.DEFINE_string("output_dir", None, "Where the PNG figures go (created).", required=True)
flags.DEFINE_float("mask_ratio", 0.75, "Fraction of patches removed, in [0, 1).")
flags.DEFINE_integer("seed", 0, "Seed of the masking noise.")
flags.DEFINE_list("image_size", None, "Model input size, 'S' or 'H,W'; defaults to the checkpoint's.")
flags.DEFINE_list("mean", None, "Per-channel mean of [0, 1] pixels; defaults to run.json's, else ImageNet's.")
flags.DEFINE_list("std", None, "Per-channel std; defaults to run.json's, else ImageNet's.")
flags.DEFINE_boolean(
    "norm_pix_loss", False,
    "The checkpoint predicts per-patch normalised pixels. Official files: the mae_visualize_* weights are trained "
    "on raw pixels (False, the default); the *_full.pth pretraining checkpoints with norm_pix (pass --norm_pix_loss). "
    "Workdirs, .keras files and HF directories use their own config unless the flag is given.")
flags.DEFINE_integer("num_heads", None, "Encoder heads, for widths other than 192/384/768/1024/1280.")
flags.DEFINE_integer("decoder_num_heads", None, "Decoder heads, for decoder widths other than 512 and the above.")
flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
flags.DEFINE_boolean(
    "attention", False,
    "Draw attention maps (the last block's CLS attention, mean over heads, and attention rollout) over each "
    "unmasked image instead of reconstructions; any checkpoint with an encoder works.")
FLAGS = flags.FLAGS


def parse_floats(name, values):
    try:
        return None if values is None else [float(v) for v in values]
    except ValueError:
        raise common.UserError(
            f"--{name} must be comma-separated numbers. Received: --{name}={','.join(values)}"
        ) from None


def image_size_flag():
    size = parse_floats("image_size", FLAGS.image_size)
    if size is None:
        return None
    if len(size) not in (1, 2) or any(s < 1 or s != int(s) for s in size):
        raise common.UserError(
            f"--image_size must be 'S' or 'H,W' in pixels. Received: --image_size={','.join(FLAGS.image_size)}"
        )
    return (int(size[0]), int(size[-1]))


def load(checkpoint):
    from keras_mae import MaskedAutoencoder, checkpoints

    if not os.path.exists(checkpoint):
        raise common.UserError(f"--checkpoint {checkpoint!r} does not exist; pass a checkpoint file or directory.")
    ours_or_hf = os.path.isdir(checkpoint) or checkpoint.endswith(".keras")
    given = (FLAGS["norm_pix_loss"].present or not ours_or_hf) and not FLAGS.attention
    try:
        model = checkpoints.load_model(  # attention maps need neither setting, and an encoder has neither
            checkpoint, image_size=image_size_flag(), mask_ratio=None if FLAGS.attention else FLAGS.mask_ratio,
            norm_pix_loss=FLAGS.norm_pix_loss if given else None,
            num_heads=FLAGS.num_heads, decoder_num_heads=FLAGS.decoder_num_heads,
        )
    except ImportError as error:
        raise common.UserError(str(error)) from None
    except ValueError as error:  # --mask_ratio / --norm_pix_loss given to a model without a decoder
        if "does not apply to this checkpoint's model" not in str(error):
            raise
        raise common.UserError(f"--checkpoint {checkpoint!r}: {error} {NEEDS_DECODER}") from None
    if not isinstance(model, MaskedAutoencoder) and not FLAGS.attention:
        raise common.UserError(
            f"--checkpoint {checkpoint!r} holds a {type(model).__name__} without the MAE decoder. {NEEDS_DECODER}")
    return model


NEEDS_DECODER = ("Reconstructions need a checkpoint with the decoder, e.g. mae_visualize_vit_large.pth or "
                 "mae_pretrain_vit_large_full.pth; attention maps need only an encoder: pass --attention.")


def attention_figures(encoder, images, mean, std):
    """uint8 figures, one per image: the image | the last block's CLS attention (mean over heads) | rollout."""
    import keras

    from keras_mae.utils.attention_maps import attention_grid, attention_rollout, cls_attention

    _, attention = encoder(images, return_attention=True)
    attention = [keras.ops.convert_to_numpy(a) for a in attention]
    last_block = cls_attention(attention[-1], encoder.grid_size).mean(axis=1)  # mean over heads
    maps = [last_block, attention_rollout(attention, encoder.grid_size)]
    return [attention_grid(images[i : i + 1], [m[i : i + 1] for m in maps], mean, std, encoder.patch_size)
            for i in range(len(images))]


def main(argv):
    import keras
    import numpy as np

    from keras_mae import runs
    from keras_mae.data import find_images, fit_normalization, read_images
    from keras_mae.utils.image_grid import reconstruction_grid, write_png

    if FLAGS.batch_size < 1:
        raise common.UserError(f"--batch_size must be at least 1. Received: --batch_size={FLAGS.batch_size}")
    files = find_images(FLAGS.images)
    run = runs.run_of(FLAGS.checkpoint)
    model = load(FLAGS.checkpoint)
    try:
        mean, std = fit_normalization(parse_floats("mean", FLAGS.mean) or run.get("mean"),
                                      parse_floats("std", FLAGS.std) or run.get("std"), model.num_channels)
    except ValueError as error:
        raise common.UserError(f"--mean/--std: {error}") from None
    encoder = getattr(model, "encoder", model)
    images = read_images(files, encoder.image_size, encoder.num_channels, mean, std)
    noise = np.random.default_rng(FLAGS.seed).random((len(files), encoder.num_patches)).astype("float32")

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    written, suffix = [], "attention" if FLAGS.attention else "mae"
    for start in range(0, len(files), FLAGS.batch_size):
        batch = slice(start, start + FLAGS.batch_size)
        if FLAGS.attention:
            figures = attention_figures(encoder, images[batch], mean, std)
        else:
            out = model.reconstruct(images[batch], noise=noise[batch])
            out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
            figures = [reconstruction_grid(images[batch][i : i + 1], {k: v[i : i + 1] for k, v in out.items()},
                                           mean, std) for i in range(len(files[batch]))]
        for i, (path, figure) in enumerate(zip(files[batch], figures)):
            stem = os.path.splitext(os.path.basename(path))[0]
            name = f"{stem}_{suffix}.png"
            name = name if name not in written else f"{stem}_{start + i}_{suffix}.png"
            write_png(os.path.join(FLAGS.output_dir, name), figure)
            written.append(name)
    height, width = encoder.image_size
    what = ("attention maps (last block's CLS attention, rollout over " f"{encoder.num_layers} blocks)"
            if FLAGS.attention else f"mask_ratio {model.mask_ratio}, norm_pix_loss {model.norm_pix_loss}")
    print(f"Wrote {len(written)} figures ({height}x{width} panels, {what}) to {FLAGS.output_dir}")


if __name__ == "__main__":
    app.run(common.run_main(main))
