"""Decoding video files into frames, with an optional in-memory cache and a record of failures.

A corrupt or missing file must not end a run hours in: ``VideoReader.read`` raises ``VideoDecodeError``,
which the datasets catch, count and replace by another clip.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, TypeVar

import av
import numpy as np
import torch

log = logging.getLogger(__name__)

T = TypeVar("T")


class VideoDecodeError(RuntimeError):
    """A video file that is missing, unreadable or has no frames."""


def decode(path: str) -> torch.Tensor:
    """All frames of the first video stream as a ``(frames, height, width, 3)`` uint8 tensor."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        raise VideoDecodeError(f"{path}: {exc}") from exc
    if not frames:
        raise VideoDecodeError(f"{path}: no frames")
    return torch.from_numpy(np.stack(frames))


def count_frames(path: str) -> int:
    """The video's frame count from its container's metadata, without decoding (0 when the container lacks it)."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            if stream.duration and stream.average_rate:
                return int(round(float(stream.duration * stream.time_base * stream.average_rate)))
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        raise VideoDecodeError(f"{path}: {exc}") from exc
    return 0


def decode_frames(path: str, positions: np.ndarray) -> torch.Tensor:
    """The frames at ``positions`` (sorted, unique) as ``(len(positions), height, width, 3)`` uint8.

    Seeks to the keyframe at or before the first, decodes up to the last and stops; only the frames asked
    for are converted to RGB (the conversion, not the decoding, is most of the cost of a frame skipped).
    Fewer frames come back when the video ends sooner than its metadata said, or its timestamps cannot
    place frames; the caller then falls back to ``decode``.
    """
    wanted = set(positions.tolist())
    first, last = int(positions[0]), int(positions[-1])
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate, base, origin = stream.average_rate, stream.time_base, stream.start_time or 0
            if not rate or not base:
                return torch.empty(0)
            if first > 0:
                container.seek(origin + int(first / rate / base), stream=stream, backward=True, any_frame=False)
            kept = []
            for frame in container.decode(stream):
                if frame.pts is None:
                    return torch.empty(0)
                position = round((frame.pts - origin) * base * rate)
                if position > last:
                    break
                if position in wanted:
                    kept.append(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        raise VideoDecodeError(f"{path}: {exc}") from exc
    return torch.from_numpy(np.stack(kept)) if kept else torch.empty(0)


def _take(frames: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
    """``frames[positions]`` as whole-frame copies: indexing with an array copies element by element, 30x slower."""
    return frames.index_select(0, torch.as_tensor(positions, dtype=torch.long))


# Which source frames each clip of an item takes, given the video's frame count.
ClipPlan = Callable[[int], list[np.ndarray]]


class VideoReader:
    """Reads videos for the datasets of one process.

    ``clips`` decodes only the span of frames an item's clips need, once for all of them (an item's two
    models and their views share one decode), and converts only the frames they take. ``cache=True`` instead keeps every whole decoded video in
    memory: small datasets (the synthetic one) are then decoded once per process. Failures are remembered
    so each is logged once and counted.
    """

    def __init__(self, cache: bool = False) -> None:
        self.cache = cache
        self._frames: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.failed: dict[str, str] = {}

    def read(self, path: str) -> torch.Tensor:
        """Every frame of the video."""
        cached = self._frames.get(path)
        if cached is not None:
            return cached
        frames = self._guard(path, decode)
        if self.cache:
            with self._lock:
                self._frames[path] = frames
        return frames

    def clips(self, path: str, plan: ClipPlan) -> list[torch.Tensor]:
        """The clips ``plan`` picks for the video's frame count, each ``(frames, H, W, 3)``.

        A video shorter than a clip's span loops (its plan wraps), so it is decoded whole, as are videos
        whose container does not give a frame count or whose timestamps do not match it.
        """
        if not self.cache:
            count = self._counts.get(path)
            if count is None:
                count = self._counts.setdefault(path, self._guard(path, count_frames))
            if count:
                picks = plan(count)
                wanted = np.unique(np.concatenate(picks))
                frames = self._guard(path, lambda p: decode_frames(p, wanted))
                if len(frames) == len(wanted):
                    return [_take(frames, np.searchsorted(wanted, p)) for p in picks]
        frames = self.read(path)
        return [_take(frames, p) for p in plan(len(frames))]

    def _guard(self, path: str, fn: Callable[[str], T]) -> T:
        if path in self.failed:
            raise VideoDecodeError(self.failed[path])
        try:
            return fn(path)
        except VideoDecodeError as exc:
            with self._lock:
                if path not in self.failed:
                    self.failed[path] = str(exc)
                    log.warning("skipping unreadable video %s", exc)
            raise
