"""TimeSformer with divided space-time attention, built from ``timm.layers`` pieces.

The spatial part of every size is a plain ViT (timm's ``vit_small_patch16_224`` for ``timesformer_s``);
each block adds temporal attention across frames for every patch position, projected by a
zero-initialised ``temporal_fc`` so that training starts from the image model's behaviour, and a learned
time embedding is added to the patch tokens (Bertasius et al., 2021).
"""

from __future__ import annotations

import torch
from timm.layers import Attention, DropPath, Mlp, PatchEmbed, trunc_normal_
from torch import nn

from trainable.models.registry import register


class DividedSpaceTimeBlock(nn.Module):
    """Temporal attention (per patch, no CLS), then spatial attention (per frame, CLS shared), then MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio))

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cls``: (B, 1, D); ``patches``: (B, T, N, D) for T frames of N patches."""
        b, t, n, d = patches.shape
        xt = patches.transpose(1, 2).reshape(b * n, t, d)
        xt = self.temporal_fc(self.temporal_attn(self.temporal_norm1(xt)))
        patches = patches + self.drop_path(xt.reshape(b, n, t, d).transpose(1, 2))

        xs = torch.cat([cls.expand(b, t, d).reshape(b * t, 1, d), patches.reshape(b * t, n, d)], dim=1)
        xs = self.attn(self.norm1(xs))
        cls = cls + self.drop_path(xs[:, :1].reshape(b, t, d).mean(dim=1, keepdim=True))
        patches = patches + self.drop_path(xs[:, 1:].reshape(b, t, n, d))

        x = torch.cat([cls, patches.reshape(b, t * n, d)], dim=1)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x[:, :1], x[:, 1:].reshape(b, t, n, d)


class TimeSformer(nn.Module):
    """Video transformer over ``frames`` frames of ``size``×``size`` pixels cut into square patches."""

    prefers_channels_last = False  # patches are cut by one strided convolution, then it is all matrix products

    def __init__(
        self,
        *,
        num_classes: int,
        frames: int,
        size: int,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.frames = frames
        self.patch_embed = PatchEmbed(img_size=size, patch_size=patch_size, embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.time_embed = nn.Parameter(torch.zeros(1, frames, 1, embed_dim))
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(embed_dim, num_heads, mlp_ratio, rate) for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        for p in (self.cls_token, self.pos_embed, self.time_embed):
            trunc_normal_(p, std=0.02)
        self.apply(_init_linear)
        for block in self.blocks:
            nn.init.zeros_(block.temporal_fc.weight)
            nn.init.zeros_(block.temporal_fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if t != self.frames:
            raise ValueError(f"built for {self.frames} frames, got {t}")
        patches = self.patch_embed(x.transpose(1, 2).reshape(b * t, c, h, w))
        patches = patches + self.pos_embed[:, 1:]
        patches = patches.reshape(b, t, -1, patches.shape[-1]) + self.time_embed
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        for block in self.blocks:
            cls, patches = block(cls, patches)
        return self.norm(cls[:, 0])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_linear(module: nn.Module) -> None:
    """ViT's initialisation of linear layers."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


# CPU size: two blocks on 8-pixel patches of 32-pixel frames; ViT-S and ViT-B keep their 1:2 width ratio.
TINY = dict(patch_size=8, depth=2)


@register("timesformer_s")
def timesformer_s(num_classes: int, frames: int, size: int, scale: str = "full") -> TimeSformer:
    """ViT-S (DeiT-S dimensions) with divided attention, the paper's auxiliary ("ViT-S")."""
    if scale == "tiny":
        return TimeSformer(num_classes=num_classes, frames=frames, size=size, embed_dim=64, num_heads=2, **TINY)
    return TimeSformer(num_classes=num_classes, frames=frames, size=size)


@register("timesformer_b")
def timesformer_b(num_classes: int, frames: int, size: int, scale: str = "full") -> TimeSformer:
    """ViT-B with divided attention, TimeSformer's own size ("ViT-B")."""
    if scale == "tiny":
        return TimeSformer(num_classes=num_classes, frames=frames, size=size, embed_dim=128, num_heads=4, **TINY)
    return TimeSformer(num_classes=num_classes, frames=frames, size=size, embed_dim=768, num_heads=12)


@register("timesformer_tiny")
def timesformer_tiny(num_classes: int, frames: int, size: int, scale: str = "full") -> TimeSformer:
    """``timesformer_s`` at tiny scale, by name."""
    return timesformer_s(num_classes, frames, size, scale="tiny")
