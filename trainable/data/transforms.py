"""Spatial augmentations of clips (SPEC §1.2), one random draw per clip applied to all its frames.

torchvision's v2 transforms treat a ``tv_tensors.Video`` of shape ``(T, C, H, W)`` as one sample, so a
crop, flip or RandAugment operation draws its parameters once and applies them to every frame.
Every pipeline takes uint8 frames ``(T, H, W, C)`` and returns a normalised float clip ``(C, T, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SpatialOptions:
    """What the augmentation pipelines need to know; built from the training config."""

    input_size: int
    scale_min: int
    scale_max: int
    randaug_ops: int = 2
    randaug_magnitude: int = 9
    cutout: bool = True


def _normalise(video: torch.Tensor) -> torch.Tensor:
    """uint8 to normalised float in one pass (torchvision's ToDtype then Normalize take 4x as long)."""
    shape = (-1, 1, 1)  # channels of (T, C, H, W)
    mean = torch.tensor(MEAN).view(shape) * 255
    scale = 1 / (torch.tensor(STD).view(shape) * 255)
    out = video.as_subclass(torch.Tensor).to(torch.float32).sub_(mean).mul_(scale)
    return tv_tensors.wrap(out, like=video) if isinstance(video, tv_tensors.TVTensor) else out


def _finish() -> list[Callable[[torch.Tensor], torch.Tensor]]:
    return [_normalise]


def _weak(opts: SpatialOptions) -> list[v2.Transform]:
    # v2.RandomResize(min, max) resizes the shorter side to a size drawn from [min, max).
    return [
        v2.RandomResize(opts.scale_min, opts.scale_max + 1, antialias=True),
        v2.RandomCrop(opts.input_size),
        v2.RandomHorizontalFlip(),
    ]


def _compose(steps: list[v2.Transform]) -> Transform:
    pipeline = v2.Compose(steps)

    def apply(frames: torch.Tensor) -> torch.Tensor:
        video = tv_tensors.Video(frames.permute(0, 3, 1, 2))
        return pipeline(video).as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()

    return apply


def weak(opts: SpatialOptions) -> Transform:
    """``G_w`` (and ``G_n`` for labeled clips): random short-side scale, random crop, horizontal flip."""
    return _compose(_weak(opts) + _finish())


def strong(opts: SpatialOptions) -> Transform:
    """``G_s``: the weak pipeline, then RandAugment and optionally a cutout at one place in every frame."""
    steps = _weak(opts) + [v2.RandAugment(num_ops=opts.randaug_ops, magnitude=opts.randaug_magnitude)]
    steps += _finish()
    if opts.cutout:
        steps.append(v2.RandomErasing(p=1.0, scale=(0.05, 0.2), value=0))
    return _compose(steps)


def test_views(opts: SpatialOptions, crops: int) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """Resize the short side to the input size and take ``crops`` crops spread along the long side."""
    resize = v2.Resize(opts.input_size, antialias=True)
    finish = v2.Compose(_finish())
    size = opts.input_size

    def apply(frames: torch.Tensor) -> list[torch.Tensor]:
        video = resize(tv_tensors.Video(frames.permute(0, 3, 1, 2)))
        h, w = video.shape[-2:]
        views = []
        for i in range(crops):
            frac = 0.5 if crops == 1 else i / (crops - 1)
            top = round((h - size) * frac) if h > w else (h - size) // 2
            left = round((w - size) * frac) if w >= h else (w - size) // 2
            crop = video[..., top : top + size, left : left + size]
            views.append(finish(crop).as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous())
        return views

    return apply
