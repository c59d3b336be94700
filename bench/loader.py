"""How fast one core turns video files into training items at the paper's settings, against the decode limit.

Encodes its own videos (nothing is downloaded): a UCF-101-like clip (320×240, 25 fps, 7.4 s, MPEG-4 part 2
in AVI, as UCF-101 ships) and a Kinetics-like one (340×256, 30 fps, 10 s, H.264 in MP4). For each it times,
on one thread, an unlabeled training item as the loop builds it (primary 8 frames at stride 8, auxiliary
8 at stride 4, weak and strong views of both, 224-pixel crops from a 256–320 short side):

- ``items/s``: the loader's item (``TrainClips`` on an uncached ``VideoReader``: decode only the span the
  item's clips need, once, convert to RGB only the frames they take, then per view the loader part of the
  augmentation, ``transforms.geometric``: scale, crop and flip by resampling only the cropped region; uint8);
- ``decode limit``: just that decoding, without augmentation (what no loader on this core can beat);
- ``full decode``: the path before (decode every frame of the video, then the whole augmentation on the CPU
  with torchvision v2: resize, crop, flip, RandAugment, normalisation, cutout), for comparison.

The rest of the augmentation (``transforms.DeviceFinish``: RandAugment and cutout of the strong views,
normalisation of all four) now runs in the training process on the batch once it is on the GPU; its cost
per item is printed too, measured here on this CPU with one thread, so that the work is seen to have moved,
not vanished. Then how many loader processes keep up with a GPU at an assumed step rate (``--gpu-steps-per-s``).

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
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

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


def rates(paths: dict[str, tuple[Callable[[int], object], int]], items: int) -> dict[str, float]:
    """Calls per second of each path ``name: (fn, every)``, which runs on every ``every``-th of ``items`` turns.

    Timed in turns (each path's call i, then each path's call i + 1), so that a load that comes and goes on
    the machine slows every path alike and the ratios between them hold.
    """
    spent, calls = dict.fromkeys(paths, 0.0), dict.fromkeys(paths, 0)
    for fn, _ in paths.values():
        fn(0)  # warm-up: first-call costs (codec set-up, transform construction) are not the steady state
    for i in range(items):
        for name, (fn, every) in paths.items():
            if i % every == 0:
                started = time.perf_counter()
                fn(i + 1)
                spent[name] += time.perf_counter() - started
                calls[name] += 1
    return {name: calls[name] / spent[name] for name in paths}


def old_views(opts: transforms.SpatialOptions) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The augmentation as the loader did all of it before: uint8 ``(T, H, W, C)`` to float ``(C, T, H, W)``."""
    weak = [v2.RandomResize(opts.scale_min, opts.scale_max + 1, antialias=True), v2.RandomCrop(opts.input_size),
            v2.RandomHorizontalFlip()]  # fmt: skip
    strong = weak + [v2.RandAugment(num_ops=opts.randaug_ops, magnitude=opts.randaug_magnitude), transforms.normalise,
                     v2.RandomErasing(p=1.0, scale=(0.05, 0.2), value=0)]  # fmt: skip

    def compose(steps: list[Callable[[torch.Tensor], torch.Tensor]]) -> Callable[[torch.Tensor], torch.Tensor]:
        pipeline = v2.Compose(steps)
        return lambda frames: pipeline(tv_tensors.Video(frames.permute(0, 3, 1, 2))).as_subclass(torch.Tensor).transpose(0, 1).contiguous()

    return {"weak": compose(weak + [transforms.normalise]), "strong": compose(strong)}


def measure(path: str, items: int) -> dict[str, float]:
    crop = transforms.geometric(OPTIONS)
    dataset = TrainClips([VideoRecord(path=path, label=0, name="v")], VideoReader(cache=False), CLIPS, {"weak": crop, "strong": crop})
    views: dict[str, transforms.View] = {f"{m}_{a}": "weak" if a == "weak" else "strong" for m in CLIPS for a in ("weak", "strong")}
    finish = transforms.DeviceFinish(OPTIONS, views)
    old = old_views(OPTIONS)
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
            for m, s in CLIPS.items() for a, t in old.items()
        }  # fmt: skip

    batches = [default_collate([ours(i)]) for i in range(4)]  # the device part's input: a batch of one item

    def device(i: int) -> object:
        torch.manual_seed(i)
        return finish(batches[i % len(batches)])

    r = rates({"ours": (ours, 1), "limit": (limit, 1), "full": (full, 4), "device": (device, 1)}, items)
    return {"span": longest, "ours": r["ours"], "limit": r["limit"], "full": r["full"], "device_ms": 1000 / r["device"]}


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
            print(f"  device part, on this CPU (one thread): {r['device_ms']:.1f} ms per item "
                  "(2 strong views' RandAugment + cutout, 4 normalisations; in training it runs on the GPU)")  # fmt: skip
            need = args.gpu_steps_per_s * args.items_per_step
            print(f"  a GPU at {args.gpu_steps_per_s:g} steps/s x {args.items_per_step} items needs {need:g} items/s: "
                  f"{int(np.ceil(need / r['ours']))} loader processes (one core each)")  # fmt: skip


if __name__ == "__main__":
    main()
