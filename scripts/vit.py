"""The Vision Transformer of `mnist-tch train --arch vit`, in plain torch.nn: the PyTorch twin of src/vit.rs.

Same pieces, same tensor names (timm's: `patch_embed.proj.weight`, `cls_token`, `pos_embed`,
`blocks.0.norm1.weight`, `blocks.0.attn.qkv.weight` (no bias, timm's qkv_bias=False), `blocks.0.attn.proj.weight`, `blocks.0.mlp.fc1.weight`,
..., `norm.weight`, `head.weight`) and the same initialisation (PyTorch's defaults for every Linear, Conv2d
and LayerNorm, a zero class token, a N(0, 0.02) position embedding), so a run's `model.safetensors` loads
with `load_state_dict` as it is. Attention runs through `F.scaled_dot_product_attention`, as mnist-tch's
through libtorch's.

`build(model_config)` takes config.json's `model` (its `vit` description, `input_shape`, `num_classes`,
`dropout`); `scripts/common.py`'s `build_torch_model` calls it for `arch: vit`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchEmbed(nn.Module):
    def __init__(self, channels: int, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, width, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, patches, width]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)  # a key bias has a true gradient of 0 (softmax)
        self.proj = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, weights: list | None = None):
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if weights is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            a = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)
            weights.append(a)
            out = a @ v
        return self.drop(self.proj(out.transpose(1, 2).reshape(n, t, d)))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden, dropout)

    def forward(self, x, weights: list | None = None):
        x = x + self.attn(self.norm1(x), weights)
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Input [N, H, W], [N, C, H, W] or [N, C*H*W]; logits [N, classes]."""

    def __init__(self, frame: tuple[int, int, int], num_classes: int, patch: int, width: int, depth: int,
                 heads: int, mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        channels, height, side = frame
        if height % patch or side % patch:
            raise ValueError(f"patch {patch} does not divide the {height}x{side} images")
        self.frame = frame
        self.patch_embed = PatchEmbed(channels, patch, width)
        tokens = (height // patch) * (side // patch) + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, width).normal_(std=0.02))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, int(width * mlp_ratio), dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def tokens(self, x):
        x = self.patch_embed(x.reshape(-1, *self.frame))
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return self.pos_drop(torch.cat([cls, x], dim=1) + self.pos_embed)

    def forward(self, x):
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])

    def forward_with_attention(self, x):
        """Logits and each block's attention weights [N, heads, T, T]."""
        weights: list = []
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x, weights)
        return self.head(self.norm(x)[:, 0]), weights


def build(model_config: dict) -> VisionTransformer:
    """The ViT config.json's `model` describes (`arch: vit`)."""
    v = model_config["vit"]
    rows, cols = model_config["input_shape"][-2:]
    channels = model_config["input_shape"][0] if len(model_config["input_shape"]) == 3 else 1
    return VisionTransformer((channels, rows, cols), model_config["num_classes"], v["patch"], v["width"], v["depth"],
                             v["heads"], v["mlp_ratio"], model_config.get("dropout") or 0.0)
