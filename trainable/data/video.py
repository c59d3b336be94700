"""Decoding video files into frames, with an optional in-memory cache and a record of failures.

A corrupt or missing file must not end a run hours in: ``VideoReader.read`` raises ``VideoDecodeError``,
which the datasets catch, count and replace by another clip.

Two decoders give the same three operations (``Decoder``): PyAV (the default: its wheels bring their own FFmpeg)
and torchcodec (``video_reader: torchcodec``, the ``.[torchcodec]`` extra), which uses the FFmpeg libraries of the
system (4 to 9; on Debian 12 ``apt-get install libavdevice59 libavfilter8``) and can decode on a GPU.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

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


TORCHCODEC_ERRORS = (RuntimeError, ValueError, OSError, IndexError)


def _torchcodec(path: str, seek_mode: str = "approximate") -> Any:
    """A torchcodec decoder of ``path``'s best video stream, frames as ``(H, W, 3)``, FFmpeg's threads as PyAV's AUTO.

    ``approximate`` places frames by the header's frame rate, as ``decode_frames`` does with PyAV; ``exact`` scans
    the file first, for a whole decode that must not trust the header."""
    from torchcodec.decoders import VideoDecoder

    try:
        return VideoDecoder(path, dimension_order="NHWC", seek_mode=seek_mode, num_ffmpeg_threads=0)
    except TORCHCODEC_ERRORS as exc:
        raise VideoDecodeError(f"{path}: {exc}") from exc


def torchcodec_decode(path: str) -> torch.Tensor:
    """``decode`` with torchcodec: every frame, ``(frames, H, W, 3)`` uint8."""
    decoder = _torchcodec(path, "exact")
    try:
        frames = decoder.get_frames_in_range(0, decoder.metadata.num_frames).data
    except TORCHCODEC_ERRORS as exc:
        raise VideoDecodeError(f"{path}: {exc}") from exc
    if not len(frames):
        raise VideoDecodeError(f"{path}: no frames")
    return frames


def torchcodec_count_frames(path: str) -> int:
    """``count_frames`` with torchcodec: the header's count, nothing decoded (0 when the header lacks it)."""
    return int(_torchcodec(path).metadata.num_frames or 0)


def torchcodec_decode_frames(path: str, positions: np.ndarray) -> torch.Tensor:
    """``decode_frames`` with torchcodec's ``get_frames_at``; empty (the caller decodes whole) when a position is past
    the video's real end or cannot be placed."""
    decoder = _torchcodec(path)
    try:
        return decoder.get_frames_at(indices=positions.tolist()).data
    except IndexError:
        return torch.empty(0)
    except TORCHCODEC_ERRORS as exc:
        raise VideoDecodeError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class Decoder:
    """One library's way of reading a video: every frame, the header's frame count, and only some frames."""

    decode: Callable[[str], torch.Tensor]
    count_frames: Callable[[str], int]
    decode_frames: Callable[[str, np.ndarray], torch.Tensor]


DECODERS = {
    "pyav": Decoder(decode, count_frames, decode_frames),
    "torchcodec": Decoder(torchcodec_decode, torchcodec_count_frames, torchcodec_decode_frames),
}


def missing_torchcodec() -> str | None:
    """Why torchcodec cannot decode here (not installed, or FFmpeg's libraries not found); None when it can."""
    try:
        from torchcodec._core import ops
    except ImportError as exc:
        return f"torchcodec is not installed ({exc}): pip install -e '.[torchcodec]'"
    if not getattr(ops, "_FFMPEG_AVAILABLE", True):
        return "torchcodec finds no FFmpeg libraries (4 to 9); on Debian 12: apt-get install libavdevice59 libavfilter8"
    return None


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
    so each is logged once and counted. ``decoder`` names the library (``DECODERS``); one that cannot decode on this
    machine is refused here, at the start of a run, not counted as every video failing.
    """

    def __init__(self, cache: bool = False, decoder: str = "pyav") -> None:
        if decoder == "torchcodec" and (why := missing_torchcodec()):
            raise RuntimeError(f"video_reader: torchcodec: {why}")
        self.decoder = DECODERS[decoder]
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
        frames = self._guard(path, self.decoder.decode)
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
                count = self._counts.setdefault(path, self._guard(path, self.decoder.count_frames))
            if count:
                picks = plan(count)
                wanted = np.unique(np.concatenate(picks))
                frames = self._guard(path, lambda p: self.decoder.decode_frames(p, wanted))
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
