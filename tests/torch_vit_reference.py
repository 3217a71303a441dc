"""A tiny PyTorch ViT with timm's / facebookresearch/mae `models_vit.py` module names, as a reference.

timm does not import here without torchvision, so this is the few lines of timm's
`VisionTransformer` (pre-norm blocks, fused qkv, exact GELU, eps 1e-6) and the
official fine-tuning head (`global_pool`: mean of patch tokens + `fc_norm`, no
`norm`; else `norm` + CLS token). Its `state_dict()` keys are the official ones.
"""

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // self.num_heads) ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, mlp_dim):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_dim):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, mlp_dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """`num_classes=0` has no head; `global_pool` has `fc_norm` instead of `norm`. Position embedding learned."""

    def __init__(self, image_size, patch_size, in_chans, dim, depth, num_heads, mlp_dim, num_classes, global_pool):
        super().__init__()
        grid = (image_size[0] // patch_size) * (image_size[1] // patch_size)
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_dim) for _ in range(depth)])
        if global_pool:
            self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes) if num_classes else None
        with torch.no_grad():  # non-trivial norms and biases, so that a mix-up shows
            for name, param in self.named_parameters():
                if "norm" in name or name.endswith("bias"):
                    param.add_(torch.randn_like(param) * 0.1)

    def tokens(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x):
        x = self.tokens(x)
        x = self.fc_norm(x[:, 1:].mean(dim=1)) if self.global_pool else self.norm(x)[:, 0]
        return x if self.head is None else self.head(x)


def official_interpolate_pos_embed(pos_embed, new_grid):
    """facebookresearch/mae `util/pos_embed.py interpolate_pos_embed`, on a tensor, to a (h, w) grid."""
    dim = pos_embed.shape[-1]
    orig_size = int((pos_embed.shape[-2] - 1) ** 0.5)
    extra_tokens, pos_tokens = pos_embed[:, :1], pos_embed[:, 1:]
    pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, dim).permute(0, 3, 1, 2)
    pos_tokens = torch.nn.functional.interpolate(pos_tokens, size=new_grid, mode="bicubic", align_corners=False)
    pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat((extra_tokens, pos_tokens), dim=1)
