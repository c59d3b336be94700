"""One registry of video backbones, so every model is built by the same name in YAML, config and code."""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from trainable.catalog import BACKBONES


class VideoClassifier(Protocol):
    """The surface every backbone has (timm's convention), so the stepped methods never special-case a family.

    Input clips are ``(batch, channels, frames, height, width)``. TimeBalance's teachers need more than this
    surface (every time step's features, ``ResNet3d.forward_temporal``), so that method accepts 3D-ResNets only.
    """

    num_features: int
    prefers_channels_last: bool  # whether ``channels_last`` (channels_last_3d memory format) applies to it

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled clip feature ``(batch, num_features)``: what the contrastive projection reads."""
        ...

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits from pooled features."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register a builder ``fn(num_classes, frames, size, scale) -> model`` under ``name``.

    ``scale="tiny"`` builds the same family at CPU size, keeping what distinguishes it (bottleneck vs basic
    blocks, ViT-S vs ViT-B width), so a paper ablation keeps its meaning at toy scale.
    """

    def wrap(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} registered twice")
        if name not in BACKBONES:  # the config would refuse it: declare it in trainable.catalog
            raise ValueError(f"backbone {name!r} is not declared in trainable.catalog.BACKBONES")
        _REGISTRY[name] = fn
        return fn

    return wrap


def check_complete() -> None:
    """Fail unless every backbone declared in ``trainable.catalog`` has a builder.

    Config validation reads the declared names without importing torch, so a declared name without a
    builder would otherwise pass ``search check`` and fail only when a trial builds it.
    """
    missing = [name for name in BACKBONES if name not in _REGISTRY]
    if missing:
        raise ImportError(f"backbones declared in trainable.catalog but never registered: {', '.join(missing)}")


def available() -> list[str]:
    """Backbone names that ``build`` accepts, sorted."""
    return sorted(_REGISTRY)


SCALES = ("full", "tiny")


def build(name: str, num_classes: int, frames: int, size: int, scale: str = "full") -> nn.Module:
    """Build backbone ``name`` for clips of ``frames`` frames of ``size``×``size`` pixels."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(available())}") from None
    return builder(num_classes=num_classes, frames=frames, size=size, scale=scale)
