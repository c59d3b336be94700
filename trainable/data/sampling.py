"""Temporal sampling: which frame indices make a clip of ``frames`` frames taken every ``stride`` frames.

Each model samples at its own rate (docs/method.md §1.2: the primary at a lower frame rate than the auxiliary).
Videos shorter than a clip's span are looped, so every clip has exactly ``frames`` frames.
"""

from __future__ import annotations

import numpy as np


def span(frames: int, stride: int) -> int:
    """Number of source frames a clip covers."""
    return (frames - 1) * stride + 1


def clip_at(num_frames: int, frames: int, stride: int, start: int) -> np.ndarray:
    """Indices of the clip starting at ``start``, looping past the end of the video."""
    return (start + stride * np.arange(frames)) % num_frames


def random_clip(num_frames: int, frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """A clip at a uniformly random position (training)."""
    slack = max(num_frames - span(frames, stride), 0)
    return clip_at(num_frames, frames, stride, int(rng.integers(0, slack + 1)))


def uniform_clips(num_frames: int, frames: int, stride: int, count: int) -> list[np.ndarray]:
    """``count`` clips with evenly spaced starts covering the video (multi-view test).

    One clip is centred; several are spread from the first possible start to the last.
    """
    slack = max(num_frames - span(frames, stride), 0)
    if count == 1:
        starts = [slack // 2]
    else:
        starts = [round(slack * i / (count - 1)) for i in range(count)]
    return [clip_at(num_frames, frames, stride, s) for s in starts]
