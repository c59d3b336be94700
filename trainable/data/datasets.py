"""Torch datasets of clips: each model gets its own temporal sampling of the same video (docs/method.md §1.2).

A training item holds, for every model ``m`` in ``clips`` and every augmentation ``a`` in ``augment``, the
clip ``f"{m}_{a}"`` (e.g. ``primary_weak`` and ``primary_strong`` are two spatial augmentations of one
temporal sample), plus ``label`` and ``index``. The loop builds it with ``transforms.geometric`` for every
augmentation, so its clips are uint8 ``(T, H, W, C)`` crops, and finishes a batch of them on the device
(``transforms.DeviceFinish``: RandAugment and cutout of the strong views, normalisation of all). A test item
holds ``f"{m}"`` as a stack of normalised float views ``(views, C, T, H, W)``: ``test_clips`` clips times
``test_crops`` crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from trainable.data import sampling
from trainable.data.index import VideoRecord
from trainable.data.transforms import Transform
from trainable.data.video import ClipPlan, VideoDecodeError, VideoReader


@dataclass(frozen=True)
class ClipSpec:
    """How one model samples a clip in time."""

    frames: int
    stride: int


class _Videos(Dataset):
    """Shared part: records, a reader, and replacing an unreadable video by the next readable one."""

    def __init__(self, records: list[VideoRecord], reader: VideoReader) -> None:
        if not records:
            raise ValueError("a dataset needs at least one video")
        self.records = records
        self.reader = reader

    def __len__(self) -> int:
        return len(self.records)

    def _clips(self, index: int, plan: ClipPlan) -> tuple[int, list[torch.Tensor]]:
        """The clips ``plan`` picks from video ``index``, or from the next readable video if it is unreadable."""
        for step in range(len(self.records)):
            i = (index + step) % len(self.records)
            try:
                return i, self.reader.clips(self.records[i].path, plan)
            except VideoDecodeError:
                continue
        raise VideoDecodeError("no video of the dataset could be decoded")


class TrainClips(_Videos):
    """Randomly placed clips, one temporal sample per model, each with every augmentation in ``augment``."""

    def __init__(
        self,
        records: list[VideoRecord],
        reader: VideoReader,
        clips: dict[str, ClipSpec],
        augment: dict[str, Transform],
        shared_start: bool = False,
    ) -> None:
        super().__init__(records, reader)
        self.clips = clips
        self.augment = augment
        self.shared_start = shared_start  # every model's clip starts at the same frame

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        # torch's RNG is seeded per worker and per epoch by the loop; numpy's draw follows it.
        rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))
        specs = list(self.clips.values())

        def plan(count: int) -> list[np.ndarray]:
            if self.shared_start:
                longest = max(sampling.span(s.frames, s.stride) for s in specs)
                start = int(rng.integers(0, max(count - longest, 0) + 1))
                return [sampling.clip_at(count, s.frames, s.stride, start) for s in specs]
            return [sampling.random_clip(count, s.frames, s.stride, rng) for s in specs]

        index, clips = self._clips(index, plan)
        item: dict[str, torch.Tensor | int] = {"label": self.records[index].label, "index": index}
        for model, clip in zip(self.clips, clips):
            for name, transform in self.augment.items():
                item[f"{model}_{name}"] = transform(clip)
        return item


class EvalClips(_Videos):
    """Every video as ``clips`` uniformly spaced clips times the crops of ``views``, per model."""

    def __init__(
        self,
        records: list[VideoRecord],
        reader: VideoReader,
        clips: dict[str, ClipSpec],
        test_clips: int,
        views: Callable[[torch.Tensor], list[torch.Tensor]],
    ) -> None:
        super().__init__(records, reader)
        self.clips = clips
        self.test_clips = test_clips
        self.views = views

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        specs = list(self.clips.values())

        def plan(count: int) -> list[np.ndarray]:
            return [idx for s in specs for idx in sampling.uniform_clips(count, s.frames, s.stride, self.test_clips)]

        index, clips = self._clips(index, plan)
        item: dict[str, torch.Tensor | int] = {"label": self.records[index].label, "index": index}
        for m, model in enumerate(self.clips):
            mine = clips[m * self.test_clips : (m + 1) * self.test_clips]
            item[model] = torch.stack([view for clip in mine for view in self.views(clip)])
        return item


def consecutive_clips(count: int, clip: ClipSpec, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """TimeBalance's sampling for teacher pretraining (§3.1, Supp. D): ``n`` consecutive clips from a random start
    (clip ``t + 1`` begins where clip ``t`` ends), then one long clip of as many frames over the same stretch,
    ``n`` times sparser, whose time axis cut in ``n`` parts lines up with the ``n`` clips."""
    step = clip.frames * clip.stride  # the next clip continues the same grid of frames
    start = int(rng.integers(0, max(count - n * step, 0) + 1))
    local = [sampling.clip_at(count, clip.frames, clip.stride, start + t * step) for t in range(n)]
    return local + [sampling.clip_at(count, clip.frames, clip.stride * n, start)]


class ConsecutiveClips(_Videos):
    """Per video, ``n`` consecutive clips each in two augmentations (``clips_a``, ``clips_b``: uint8 ``(n, T, H, W,
    C)``) and the long clip over the same stretch (``long``: ``(T, H, W, C)``): what a temporally-invariant or
    -distinctive teacher learns from, labels unused."""

    def __init__(
        self, records: list[VideoRecord], reader: VideoReader, clip: ClipSpec, n: int, augment: Transform, pretraining: bool = True
    ) -> None:
        """``pretraining`` False: ``clips_a`` only, what the similarity score ``s`` reads."""
        super().__init__(records, reader)
        if n < 2:
            raise ValueError(f"consecutive clips: n must be at least 2 (the contrastive losses compare clips), got {n}")
        self.clip, self.n, self.augment, self.pretraining = clip, n, augment, pretraining

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))  # seeded per epoch and worker by the loop
        index, clips = self._clips(index, lambda count: consecutive_clips(count, self.clip, self.n, rng))
        local = clips[: self.n]
        item: dict[str, torch.Tensor | int] = {
            "label": self.records[index].label,
            "index": index,
            "clips_a": torch.stack([self.augment(c) for c in local]),
        }
        if self.pretraining:
            item.update(clips_b=torch.stack([self.augment(c) for c in local]), long=self.augment(clips[self.n]))
        return item
