"""Spatial augmentations of clips (docs/method.md §1.2), one random draw per clip applied to all its frames.

Split in two, so that the data loader's processes do only what is cheap on uint8 and the rest runs where
it is cheap, on the training device (on a CPU with loader workers, in those workers: ``engine.endless_batches``):

- the loader part (``geometric``, in ``TrainClips``): the random short-side scale, the random crop and the
  horizontal flip of ``G_w`` and ``G_s``, done by resampling only the source region the crop comes from
  (``resized_crop``: equal to torchvision's resize then crop within interpolation differences).
  uint8 in, uint8 out ``(T, S, S, C)``: the decoder's layout, so batching is a plain copy and a pinned
  transfer moves a quarter of the bytes of a float clip;
- the device part (``DeviceFinish``, applied to a collated batch on the training device): RandAugment
  and cutout of the strong views, and normalisation to float ``(B, C, T, H, W)`` of every view.

torchvision's v2 transforms treat a ``tv_tensors.Video`` of shape ``(T, C, H, W)`` as one sample, so a
RandAugment or erasing operation draws its parameters once and applies them to every frame.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)

Transform = Callable[[torch.Tensor], torch.Tensor]
Augmentation = Literal["weak", "strong"]


@dataclass(frozen=True)
class SpatialOptions:
    """What the augmentation pipelines need to know; built from the training config."""

    input_size: int
    resize_min: int
    resize_max: int
    randaug_ops: int = 2
    randaug_magnitude: int = 9
    cutout: bool = True


@dataclass(frozen=True)
class Crop:
    """One clip's geometric draw: resize the frames to ``height`` x ``width``, take the square at
    (``top``, ``left``), mirror it if ``flip``."""

    height: int
    width: int
    top: int
    left: int
    flip: bool


def draw_crop(height: int, width: int, opts: SpatialOptions) -> Crop:
    """The draw of ``v2.RandomResize(resize_min, resize_max + 1)``, ``v2.RandomCrop(input_size)`` and
    ``v2.RandomHorizontalFlip()`` on a ``height`` x ``width`` clip: the same draws from torch's RNG, in
    their order, so one seed gives both the same crop."""
    short = int(torch.randint(opts.resize_min, opts.resize_max + 1, ()))
    if width <= height:  # torchvision's rule: the short side to ``short``, the long one scaled and truncated
        new_h, new_w = int(short * height / width), short
    else:
        new_h, new_w = short, int(short * width / height)
    size = opts.input_size
    top = int(torch.randint(0, new_h - size + 1, ())) if new_h > size else 0
    left = int(torch.randint(0, new_w - size + 1, ())) if new_w > size else 0
    return Crop(new_h, new_w, top, left, flip=bool(torch.rand(1) < 0.5))


def resized_crop(frames: torch.Tensor, crop: Crop, size: int) -> torch.Tensor:
    """uint8 ``(T, H, W, C)`` to the ``size`` square ``crop`` takes of the resized frames, uint8 ``(T, size, size, C)``.

    Resamples only the source region under the crop, with the resize's own step (its scales, not the
    region's size over ``size``). The kernel starts its sampling grid at its input's first pixel, so the
    region starts at the crop's first source pixel rounded to a whole one: against resizing whole frames
    then cropping, the crop moves by at most half a source pixel, and the first row and column read no
    pixel before the region (as a crop-then-resize does at its edge). Same draw, same distribution within
    interpolation differences. On a 320x240 video at the paper's scales it takes 0.9 ms a view on one core,
    against 1.6 ms for resizing whole frames and 1.4 ms for the exact crop (a region from pixel 0, whose
    outputs before the crop are computed and dropped): the loader made 0.73 of the decode limit, not 0.68.
    """
    h, w = frames.shape[1:3]
    ratio_y, ratio_x = h / crop.height, w / crop.width  # source pixels per resized pixel
    top, left = min(round(crop.top * ratio_y), h - 1), min(round(crop.left * ratio_x), w - 1)
    # Enough source for the last pixel's filter: 1 pixel each side, or the ratio when shrinking; one to spare.
    rows = min(h - top, math.ceil(size * ratio_y + max(ratio_y, 1.0)) + 1)
    cols = min(w - left, math.ceil(size * ratio_x + max(ratio_x, 1.0)) + 1)
    region = frames.permute(0, 3, 1, 2)[:, :, top : top + rows, left : left + cols]  # channels-last: the fast uint8 path
    # The kernel copies a side whose output size equals its input's, whatever the scale: then ask for one more.
    out_size = [size + (rows == size), size + (cols == size)]
    # F.interpolate takes an output size or scales, not both; the kernel takes both (sizes exact, positions from the scales).
    out = torch.ops.aten._upsample_bilinear2d_aa(region, out_size, False, 1 / ratio_y, 1 / ratio_x)[:, :, :size, :size]
    if crop.flip:
        out = out.flip(-1)
    return out.permute(0, 2, 3, 1).contiguous()


def geometric(opts: SpatialOptions) -> Transform:
    """The loader's part of ``G_w``, ``G_s`` and ``G_n``: random short-side scale in ``[resize_min, resize_max]``,
    random ``input_size`` crop, horizontal flip with probability 1/2; one draw for all frames of a clip.
    uint8 ``(T, H, W, C)`` in and out."""

    def apply(frames: torch.Tensor) -> torch.Tensor:
        return resized_crop(frames, draw_crop(frames.shape[1], frames.shape[2], opts), opts.input_size)

    return apply


@functools.cache
def _statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``MEAN`` and ``1 / STD`` in uint8 units, made once per device: a copy to a GPU would wait for the GPU."""
    return (torch.tensor(MEAN) * 255).to(device), (1 / (torch.tensor(STD) * 255)).to(device)


def normalise(clips: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
    """uint8 to normalised float, contiguous in ``clips``' shape (whatever its strides), in one conversion and
    two in-place passes (torchvision's ToDtype then Normalize take 4x as long)."""
    shape = [1] * clips.dim()
    shape[channel_dim] = -1
    mean, scale = _statistics(clips.device)
    out = clips.as_subclass(torch.Tensor).to(torch.float32, memory_format=torch.contiguous_format)
    out = out.sub_(mean.view(shape)).mul_(scale.view(shape))
    return tv_tensors.wrap(out, like=clips) if isinstance(clips, tv_tensors.TVTensor) else out


class DeviceFinish:
    """The device's part of the augmentations, applied to a collated batch (``engine.endless_batches`` says where).

    ``views`` names the batch's uint8 ``(B, T, H, W, C)`` entries (as ``geometric`` made them) and what each
    is: ``"strong"`` (``G_s``) gets RandAugment, normalisation and, if ``opts.cutout``, one erased rectangle
    (value 0, i.e. the mean colour) per clip; ``"weak"`` (``G_w``, ``G_n``) is normalised only. Each becomes
    float32 ``(B, C, T, H, W)``, contiguous; other entries pass unchanged. Every clip draws its own operations
    from torch's global RNG (a loader worker's own, seeded from the training process's), which the driver re-seeds
    every epoch, so a resumed run draws the same. A batch at a time rather than in each item's loading, because
    RandAugment on a CPU costs more than decoding the video: on an accelerator it runs there, and on a CPU with
    loader workers it runs in them, beside the training step.
    """

    def __init__(self, opts: SpatialOptions, views: dict[str, Augmentation]) -> None:
        self.views = views
        self.randaugment = v2.RandAugment(num_ops=opts.randaug_ops, magnitude=opts.randaug_magnitude)
        self.cutout = v2.RandomErasing(p=1.0, scale=(0.05, 0.2), value=0) if opts.cutout else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        for key, view in self.views.items():
            if key in batch:
                out[key] = self.strong(batch[key]) if view == "strong" else self.weak(batch[key])
        return out

    def weak(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, H, W, C)`` to normalised float ``(B, C, T, H, W)``."""
        return normalise(clips.permute(0, 4, 1, 2, 3), channel_dim=1)

    def strong(self, clips: torch.Tensor) -> torch.Tensor:
        """RandAugment on each uint8 clip, then ``weak``'s normalisation, then cutout on each clip."""
        frames = clips.permute(0, 1, 4, 2, 3)  # (B, T, C, H, W): each clip a Video
        augmented = torch.stack([self.randaugment(tv_tensors.Video(clip)).as_subclass(torch.Tensor) for clip in frames])
        out = normalise(augmented.transpose(1, 2), channel_dim=1)
        if self.cutout is not None:
            for clip in out:  # (C, T, H, W); the rectangle is drawn on (H, W) and erased in every frame
                p = self.cutout.make_params([tv_tensors.Video(clip.transpose(0, 1))])
                clip[..., p["i"] : p["i"] + p["h"], p["j"] : p["j"] + p["w"]] = 0
        return out


def test_views(opts: SpatialOptions, crops: int) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """Resize the short side to the input size and take ``crops`` crops spread along the long side."""
    resize = v2.Resize(opts.input_size, antialias=True)
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
            views.append(normalise(crop.as_subclass(torch.Tensor).transpose(0, 1), channel_dim=0))
        return views

    return apply
