"""Decoding video files into frames, with an optional in-memory cache and a record of failures.

A corrupt or missing file must not end a run hours in: ``VideoReader.read`` raises ``VideoDecodeError``,
which the datasets catch, count and replace by another clip.
"""

from __future__ import annotations

import logging
import threading

import av
import numpy as np
import torch

log = logging.getLogger(__name__)


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


class VideoReader:
    """Reads videos for the datasets of one process.

    ``cache=True`` keeps every decoded video in memory: small datasets (the synthetic one) are then decoded
    once per process instead of once per clip. Failures are remembered so each is logged once and counted.
    """

    def __init__(self, cache: bool = False) -> None:
        self.cache = cache
        self._frames: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        self.failed: dict[str, str] = {}

    def read(self, path: str) -> torch.Tensor:
        if path in self.failed:
            raise VideoDecodeError(self.failed[path])
        cached = self._frames.get(path)
        if cached is not None:
            return cached
        try:
            frames = decode(path)
        except VideoDecodeError as exc:
            with self._lock:
                if path not in self.failed:
                    self.failed[path] = str(exc)
                    log.warning("skipping unreadable video %s", exc)
            raise
        if self.cache:
            with self._lock:
                self._frames[path] = frames
        return frames
