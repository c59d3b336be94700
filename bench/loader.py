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

The first two for each decoder (``trainable.data.video.DECODERS``): PyAV, the default, and torchcodec
(``VideoDecoder.get_frames_at``; the ``.[torchcodec]`` extra and the system's FFmpeg libraries), timed in the same
turns on the same videos, with torchcodec's rates as a ratio of PyAV's. Without torchcodec it says why and times PyAV.
``--cuda-decode`` adds torchcodec decoding on the GPU (``device="cuda"``, FFmpeg's NVDEC), the decode limit only: a
loader worker cannot hold CUDA, so this is what a decoder in the training process could reach.

The rest of the augmentation (``transforms.DeviceFinish``: RandAugment and cutout of the strong views,
normalisation of all four) now runs in the training process on the batch once it is on the GPU; its cost
per item is printed too, measured here on this CPU with one thread, so that the work is seen to have moved,
not vanished. Then how many loader processes keep up with a GPU at an assumed step rate (``--gpu-steps-per-s``).

    python bench/loader.py [--items 40] [--gpu-steps-per-s 3] [--cuda-decode]
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
from trainable.data.video import DECODERS, VideoReader, count_frames, decode, missing_torchcodec  # noqa: E402

CLIPS = {"primary": ClipSpec(8, 8), "aux": ClipSpec(8, 4)}
OPTIONS = transforms.SpatialOptions(input_size=224, resize_min=256, resize_max=320)
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
    weak = [v2.RandomResize(opts.resize_min, opts.resize_max + 1, antialias=True), v2.RandomCrop(opts.input_size),
            v2.RandomHorizontalFlip()]  # fmt: skip
    strong = weak + [v2.RandAugment(num_ops=opts.randaug_ops, magnitude=opts.randaug_magnitude), transforms.normalise,
                     v2.RandomErasing(p=1.0, scale=(0.05, 0.2), value=0)]  # fmt: skip

    def compose(steps: list[Callable[[torch.Tensor], torch.Tensor]]) -> Callable[[torch.Tensor], torch.Tensor]:
        pipeline = v2.Compose(steps)
        return lambda frames: pipeline(tv_tensors.Video(frames.permute(0, 3, 1, 2))).as_subclass(torch.Tensor).transpose(0, 1).contiguous()

    return {"weak": compose(weak + [transforms.normalise]), "strong": compose(strong)}


def measure(path: str, items: int, decoders: list[str], cuda: bool = False) -> dict[str, float]:
    """Each path's rate on ``path``, timed in turns: the loader's item and the decode limit per decoder, the full
    decode, the device part in ms, and with ``cuda`` torchcodec's decode limit on the GPU."""
    crop = transforms.geometric(OPTIONS)
    datasets = {
        name: TrainClips([VideoRecord(path=path, label=0, name="v")], VideoReader(decoder=name), CLIPS, {"weak": crop, "strong": crop})
        for name in decoders
    }
    views: dict[str, transforms.Augmentation] = {f"{m}_{a}": "weak" if a == "weak" else "strong" for m in CLIPS for a in ("weak", "strong")}
    finish = transforms.DeviceFinish(OPTIONS, views)
    old = old_views(OPTIONS)
    count = count_frames(path)
    longest = max(sampling.span(s.frames, s.stride) for s in CLIPS.values())

    def ours(name: str) -> Callable[[int], object]:
        def item(i: int) -> object:
            torch.manual_seed(i)
            return datasets[name][0]

        return item

    def limit(name: str) -> Callable[[int], object]:
        def frames(i: int) -> object:  # the frames one item needs (both clips, random placements), decoded, no augmentation
            rng = np.random.default_rng(i)
            picks = [sampling.random_clip(count, s.frames, s.stride, rng) for s in CLIPS.values()]
            return DECODERS[name].decode_frames(path, np.unique(np.concatenate(picks)))

        return frames

    def full(i: int) -> object:  # the landed code before: every frame decoded, then the same clips and views
        torch.manual_seed(i)
        frames = decode(path)
        rng = np.random.default_rng(i)
        return {
            f"{m}_{a}": t(frames[sampling.random_clip(len(frames), s.frames, s.stride, rng)])
            for m, s in CLIPS.items() for a, t in old.items()
        }  # fmt: skip

    batches = [default_collate([ours("pyav")(i)]) for i in range(4)]  # the device part's input: a batch of one item

    def device(i: int) -> object:
        torch.manual_seed(i)
        return finish(batches[i % len(batches)])

    paths = {f"{kind} {name}": (fn(name), 1) for name in decoders for kind, fn in (("ours", ours), ("limit", limit))}
    if cuda:
        from torchcodec.decoders import VideoDecoder

        def limit_cuda(i: int) -> object:
            rng = np.random.default_rng(i)
            picks = [sampling.random_clip(count, s.frames, s.stride, rng) for s in CLIPS.values()]
            frames = on_gpu.get_frames_at(indices=np.unique(np.concatenate(picks)).tolist()).data
            torch.cuda.synchronize()
            return frames

        try:  # one decoder per video: NVDEC's set-up is not paid per item
            on_gpu = VideoDecoder(path, device="cuda", seek_mode="approximate")
            limit_cuda(0)
            paths["limit torchcodec-cuda"] = (limit_cuda, 1)
        except (RuntimeError, ValueError) as exc:  # no GPU, or an FFmpeg without NVDEC
            print(f"  torchcodec on the GPU not timed: {str(exc).splitlines()[0][:200]}")
    r = rates({**paths, "full": (full, 4), "device": (device, 1)}, items)
    return {"span": longest, **{k: v for k, v in r.items() if " " in k}, "full": r["full"], "device_ms": 1000 / r["device"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=40, help="items timed per path and video")
    parser.add_argument("--gpu-steps-per-s", type=float, default=3.0,
                        help="assumed GPU step rate (not measured here; bench/gpu_check.sh measures it on a GPU)")  # fmt: skip
    parser.add_argument("--items-per-step", type=int, default=6, help="B_l + B_u per GPU (paper: 1 + 5)")
    parser.add_argument("--cuda-decode", action="store_true", help="also time torchcodec's decoding on the GPU (NVDEC)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    why = missing_torchcodec()
    decoders = ["pyav"] + ([] if why else ["torchcodec"])
    with tempfile.TemporaryDirectory() as folder:
        print(f"one core, paper settings (primary 8x8, aux 8x4, weak+strong, 224 crops of a 256-320 short side), {args.items} items")
        if why:
            print(f"torchcodec not timed: {why}")
        print(f"{'video':28s} {'decoder':10s} {'frames':>6s} {'span':>5s} {'items/s':>8s} {'decode limit':>12s} {'of limit':>8s} "
              f"{'full decode':>11s} {'vs full':>7s} {'vs pyav':>7s}")  # fmt: skip
        for name, (width, height, fps, frames, codec, file) in VIDEOS.items():
            path = str(Path(folder) / file)
            encode(Path(path), width, height, fps, frames, codec)
            r = measure(path, args.items, decoders, cuda=args.cuda_decode and not why)
            for lib in decoders:
                ours, limit = r[f"ours {lib}"], r[f"limit {lib}"]
                print(f"{name:28s} {lib:10s} {frames:6d} {r['span']:5d} {ours:8.2f} {limit:12.2f} {ours / limit:8.2f} "
                      f"{r['full']:11.2f} {ours / r['full']:6.1f}x {ours / r['ours pyav']:6.2f}x")  # fmt: skip
            if "limit torchcodec-cuda" in r:
                gpu = r["limit torchcodec-cuda"]
                print(f"  torchcodec on the GPU (NVDEC): decode limit {gpu:.2f} items/s, {gpu / r['limit pyav']:.2f}x PyAV's on one core")
            print(f"  device part, on this CPU (one thread): {r['device_ms']:.1f} ms per item "
                  "(2 strong views' RandAugment + cutout, 4 normalisations; in training it runs on the GPU)")  # fmt: skip
            need = args.gpu_steps_per_s * args.items_per_step
            print(f"  a GPU at {args.gpu_steps_per_s:g} steps/s x {args.items_per_step} items needs {need:g} items/s: "
                  f"{int(np.ceil(need / r['ours pyav']))} loader processes (one core each, PyAV)")  # fmt: skip


if __name__ == "__main__":
    main()
