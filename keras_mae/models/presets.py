"""Named MaskedAutoencoder configurations.

Paper sizes (He et al. 2021, Table 1 / appendix A.1; ViT sizes from Dosovitskiy
et al. 2020): the decoder is 512 wide, 8 blocks, 16 heads, as the official
`mae_vit_*_dec512d8b` constructors. The small-image presets are ViT-Tiny wide
for 28 to 32 pixel images (Fashion-MNIST, MNIST, CIFAR), with the light
128-wide, 2-block decoder that suits 49 to 256 patches.
"""

PAPER_DECODER = dict(decoder_hidden_dim=512, decoder_num_layers=8, decoder_num_heads=16, decoder_mlp_dim=2048)
SMALL_DECODER = dict(decoder_hidden_dim=128, decoder_num_layers=2, decoder_num_heads=4, decoder_mlp_dim=512)

#                       hidden_dim, num_layers, num_heads, mlp_dim
VIT_SIZES = {
    "tiny": (192, 12, 3, 768),
    "small": (384, 12, 6, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "huge": (1280, 32, 16, 5120),
}


def _vit(size, **config):
    hidden_dim, num_layers, num_heads, mlp_dim = VIT_SIZES[size]
    return dict(hidden_dim=hidden_dim, num_layers=num_layers, num_heads=num_heads, mlp_dim=mlp_dim, **config)


PRESETS = {
    "mae_vit_tiny_patch16": _vit("tiny", image_size=224, patch_size=16, num_channels=3, **PAPER_DECODER),
    "mae_vit_small_patch16": _vit("small", image_size=224, patch_size=16, num_channels=3, **PAPER_DECODER),
    "mae_vit_base_patch16": _vit("base", image_size=224, patch_size=16, num_channels=3, **PAPER_DECODER),
    "mae_vit_large_patch16": _vit("large", image_size=224, patch_size=16, num_channels=3, **PAPER_DECODER),
    "mae_vit_huge_patch14": _vit("huge", image_size=224, patch_size=14, num_channels=3, **PAPER_DECODER),
    # Small images: 6 ViT-Tiny blocks, grayscale 28x28 or RGB 32x32.
    "mae_vit_tiny_patch4_28": _vit("tiny", image_size=28, patch_size=4, num_channels=1, **SMALL_DECODER) | {"num_layers": 6},
    "mae_vit_tiny_patch2_28": _vit("tiny", image_size=28, patch_size=2, num_channels=1, **SMALL_DECODER) | {"num_layers": 6},
    "mae_vit_tiny_patch4_32": _vit("tiny", image_size=32, patch_size=4, num_channels=3, **SMALL_DECODER) | {"num_layers": 6},
    "mae_vit_tiny_patch2_32": _vit("tiny", image_size=32, patch_size=2, num_channels=3, **SMALL_DECODER) | {"num_layers": 6},
}

ENCODER_KEYS = ("image_size", "patch_size", "num_channels", "hidden_dim", "num_layers", "num_heads", "mlp_dim")


def preset_config(name):
    """The MaskedAutoencoder constructor arguments of a preset."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}.")
    return dict(PRESETS[name])


def encoder_config(name):
    """The ViTEncoder constructor arguments of a preset's encoder."""
    return {key: value for key, value in preset_config(name).items() if key in ENCODER_KEYS}
