"""How fast one core turns video files into training items at the paper's settings, against the decode limit.

Encodes its own videos (nothing is downloaded): a UCF-101-like clip (320×240, 25 fps, 7.4 s, MPEG-4 part 2
in AVI, as UCF-101 ships) and a Kinetics-like one (340×256, 30 fps, 10 s, H.264 in MP4). For each it times,
on one thread, an unlabeled training item as the loop builds it (primary 8 frames at stride 8, auxiliary
8 at stride 4, weak and strong views of both, 224-pixel crops from a 256–320 short side):

- ``items/s``: the current path (``TrainClips`` on an uncached ``VideoReader``: decode only the span the
  item's clips need, once, convert to RGB only the frames they take, then augment);
- ``decode limit``: just that decoding, without augmentation (what no loader on this core can beat);
- ``full decode``: the path before (decode every frame of the video, then augment), for comparison.

Then how many loader processes keep up with a GPU at an assumed step rate (``--gpu-steps-per-s``).

    python bench/loader.py [--items 40] [--gpu-steps-per-s 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainable.data import sampling, transforms  # noqa: E402
from trainable.data.datasets import ClipSpec, TrainClips  # noqa: E402
from trainable.data.index import VideoRecord  # noqa: E402
from trainable.data.video import VideoReader, count_frames, decode, decode_frames  # noqa: E402

CLIPS = {"primary": ClipSpec(8, 8), "aux": ClipSpec(8, 4)}
OPTIONS = transforms.SpatialOptions(input_size=224, scale_min=256, scale_max=320)
VIDEOS = {  # name: (width, height, fps, frames, codec, file)
    "UCF-like 320x240 7.4 s": (320, 240, 25, 186, "mpeg4", "ucf.avi"),
    "Kinetics-like 340x256 10 s": (340, 256, 30, 300, "libx264", "k400.mp4"),
}


def encode(path: Path, width: int, height: int, fps: int, frames: int, codec: str) -> None:
    """A textured scene with moving objects and camera noise, so the codec has real work (not flat colour)."""
    import av

    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (height, width, 3), np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.gop_size = 12 if codec == "mpeg4" else 250
        for t in range(frames):
            image = np.roll(background, t * 2, axis=1).copy()
            x, y = (t * 5) % (width - 40), (t * 3) % (height - 40)
            image[y : y + 40, x : x + 40] = (255, 64, 0)
            image = np.clip(image.astype(np.int16) + rng.integers(-8, 8, image.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def rate(fn: Callable[[int], object], items: int) -> float:
    fn(0)  # warm-up: first-call costs (codec set-up, transform construction) are not the steady state
    started = time.perf_counter()
    for i in range(items):
        fn(i + 1)
    return items / (time.perf_counter() - started)


def measure(path: str, items: int) -> dict[str, float]:
    augment = {"weak": transforms.weak(OPTIONS), "strong": transforms.strong(OPTIONS)}
    dataset = TrainClips([VideoRecord(path=path, label=0, name="v")], VideoReader(cache=False), CLIPS, augment)
    count = count_frames(path)
    longest = max(sampling.span(s.frames, s.stride) for s in CLIPS.values())

    def ours(i: int) -> object:
        torch.manual_seed(i)
        return dataset[0]

    def limit(i: int) -> object:  # the frames one item needs (both clips, random placements), decoded, no augmentation
        rng = np.random.default_rng(i)
        picks = [sampling.random_clip(count, s.frames, s.stride, rng) for s in CLIPS.values()]
        return decode_frames(path, np.unique(np.concatenate(picks)))

    def full(i: int) -> object:  # the landed code before: every frame decoded, then the same clips and views
        torch.manual_seed(i)
        frames = decode(path)
        rng = np.random.default_rng(i)
        return {
            f"{m}_{a}": t(frames[sampling.random_clip(len(frames), s.frames, s.stride, rng)])
            for m, s in CLIPS.items() for a, t in augment.items()
        }  # fmt: skip

    return {"span": longest, "ours": rate(ours, items), "limit": rate(limit, items), "full": rate(full, max(4, items // 4))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=40, help="items timed per path and video")
    parser.add_argument("--gpu-steps-per-s", type=float, default=3.0,
                        help="assumed GPU step rate (not measured here; bench/gpu_check.sh measures it on a GPU)")  # fmt: skip
    parser.add_argument("--items-per-step", type=int, default=6, help="B_l + B_u per GPU (paper: 1 + 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        print(f"one core, paper settings (primary 8x8, aux 8x4, weak+strong, 224 crops of a 256-320 short side), {args.items} items")
        print(f"{'video':28s} {'frames':>6s} {'span':>5s} {'items/s':>8s} {'decode limit':>12s} {'of limit':>8s} {'full decode':>11s} {'vs full':>7s}")
        for name, (width, height, fps, frames, codec, file) in VIDEOS.items():
            path = str(Path(folder) / file)
            encode(Path(path), width, height, fps, frames, codec)
            r = measure(path, args.items)
            print(f"{name:28s} {frames:6d} {r['span']:5d} {r['ours']:8.2f} {r['limit']:12.2f} {r['ours'] / r['limit']:8.2f} "
                  f"{r['full']:11.2f} {r['ours'] / r['full']:6.1f}x")  # fmt: skip
            need = args.gpu_steps_per_s * args.items_per_step
            print(f"  a GPU at {args.gpu_steps_per_s:g} steps/s x {args.items_per_step} items needs {need:g} items/s: "
                  f"{int(np.ceil(need / r['ours']))} loader processes (one core each)")  # fmt: skip


if __name__ == "__main__":
    main()
