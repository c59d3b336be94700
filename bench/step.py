"""What an ActNetFormer training step costs beyond the bare forward and backward passes of its two models.

Times the loop's own step (``trainable.loop.train_step``: both models on the labeled, weak and strong
views, every loss, one backward, each model's gradient clip and optimizer step, the epoch's sums) against
a reference: the same forward passes of the same two models on the same clips (labeled clips as one batch,
weak and strong as another, as the loop's split batch norm does), a trivial loss (the logits' sum) and one
backward, no optimizer. Clips are random tensors already on the device, so loading is not timed
(``bench/loader.py`` measures that).

The CPU default is the paper's models (``--scale full``: ResNet-50 and ViT-S widths, so the optimizer and
the gradient clip go over the real 65 M parameters, heads included) on small clips (4 frames of 64 pixels),
so that a step takes seconds, not minutes. The passes over the parameters then weigh, against the forward
and backward passes, within a few times what they weigh at the paper's clip size on a GPU: a GPU does about
ten times more FLOPs per byte of memory traffic than a CPU, and these clips are 25 times cheaper.
``--scale tiny`` (the CPU models on 8 frames of 32 pixels) is the other extreme, where fixed per-step costs
(Python, small kernels) weigh most. ``bench/gpu_check.sh`` runs the paper's settings on a GPU (8 frames of
224 pixels, bf16).

    python bench/step.py                                  # CPU: full-width models, 4x64x64 clips
    python bench/step.py --scale tiny
    python bench/step.py --device cuda --bf16 --frames 8 --size 224 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainable import methods  # noqa: E402
from trainable.config import TrainConfig  # noqa: E402
from trainable.engine import new_sums  # noqa: E402
from trainable.loop import build_nets, train_step  # noqa: E402
from trainable.optim import Optimizers  # noqa: E402
from trainable.models.registry import SCALES  # noqa: E402

NUM_CLASSES = 101  # UCF-101's


def config(args: argparse.Namespace) -> TrainConfig:
    """The loop's config at the bench's scale (``scale: tiny`` fills in its clip settings unless ``--frames`` and
    ``--size`` are given, as in training)."""
    frames, size = args.frames, args.size
    if args.scale == "full":
        frames, size = frames or 4, size or 64
    clips = {"primary_frames": frames, "aux_frames": frames} if frames else {}
    pixels = {"input_size": size, "resize_min": size, "resize_max": size} if size else {}
    return TrainConfig.parse(
        {
            "method": "actnetformer",
            "scale": args.scale,
            **clips,
            **pixels,
            "batch_size": args.batch,
            "mu": args.mu,
            **({"precision": "bf16"} if args.bf16 else {}),
            "channels_last": args.device.startswith("cuda"),
        }
    )


def batches(cfg: TrainConfig, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """A labeled and an unlabeled batch as the loader delivers them, already on the device."""
    unlabeled_batch = cfg.mu * cfg.batch_size

    def clips(n: int, frames: int) -> torch.Tensor:
        return torch.randn(n, 3, frames, cfg.input_size, cfg.input_size, device=device)

    frames = {"primary": cfg.primary_frames, "aux": cfg.aux_frames}
    lab: dict[str, Any] = {f"{m}_labeled": clips(cfg.batch_size, t) for m, t in frames.items()}
    lab["label"] = torch.randint(NUM_CLASSES, (cfg.batch_size,), device=device)
    unl: dict[str, Any] = {f"{m}_{v}": clips(unlabeled_batch, t) for m, t in frames.items() for v in ("weak", "strong")}
    unl["label"] = torch.randint(NUM_CLASSES, (unlabeled_batch,), device=device)
    return lab, unl


def reference_step(nets: dict[str, methods.Net], lab: dict[str, Any], unl: dict[str, Any], autocast: Any) -> None:
    """The floor: each model's two forward passes (labeled; weak + strong), a trivial loss, one backward."""
    loss = torch.zeros((), device=lab["label"].device)
    with autocast:
        for model, net in nets.items():
            net.zero_grad(set_to_none=True)
            for views in ([lab[f"{model}_labeled"]], [unl[f"{model}_weak"], unl[f"{model}_strong"]]):
                logits, _ = net(torch.cat(views))
                loss = loss + logits.float().sum()
    loss.backward()


def timed(fn: Callable[[], None], calls: int, device: torch.device) -> list[float]:
    """Seconds of each of ``calls`` calls in a row.

    On a GPU, as the device's timeline sees them: events between the calls and no synchronisation, so a step
    that makes the host wait (an ``.item()``) shows as the GPU idling, as it would in the loop, where the host
    otherwise runs ahead and queues the next step while the GPU computes.
    """
    if device.type != "cuda":
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return times
    events = [torch.cuda.Event(enable_timing=True) for _ in range(calls + 1)]
    events[0].record()
    for event in events[1:]:
        fn()
        event.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1000 for start, end in zip(events, events[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=SCALES, default="full", help="full: the paper's model widths")
    parser.add_argument("--batch", type=int, default=1, help="labeled clips per step, B_l (paper: 1 per GPU)")
    parser.add_argument("--mu", type=int, default=5, help="unlabeled clips per labeled clip (paper: 5)")
    parser.add_argument("--frames", type=int, help="frames per clip, both models (default: 4; paper: 8; tiny: 8)")
    parser.add_argument("--size", type=int, help="clip height and width (default: 64; paper: 224; tiny: 32)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each kind (on a GPU, a multiple of 5); the median is printed")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each kind first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as precision: bf16")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = config(args)
    method = methods.get(cfg.method)
    nets = {role: net.to(device).train() for role, net in build_nets(cfg, method, NUM_CLASSES).items()}
    optimizers = Optimizers.cosine(cfg, nets, steps_per_epoch=1000)
    lab, unl = batches(cfg, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    weights = methods.Weights(cfg.threshold, cfg.gamma, cfg.beta, cfg.temperature, cfg.contrastive_symmetric)
    sums = new_sums()

    def step() -> None:
        train_step(method, nets, optimizers, autocast, lab, unl, weights, sums, cfg.batchnorm == "joint")

    def reference() -> None:
        reference_step(nets, lab, unl, autocast)

    parameters = sum(p.numel() for net in nets.values() for p in net.parameters())
    print(
        f"{cfg.method} {cfg.primary_backbone}+{cfg.aux_backbone} scale {cfg.scale}, {parameters / 1e6:.1f} M parameters; "
        f"{cfg.batch_size}+{cfg.mu * cfg.batch_size} clips of {cfg.primary_frames}x{cfg.input_size}x{cfg.input_size}, "
        f"{cfg.precision}, {cfg.optimizer}, {device}, {torch.get_num_threads()} threads"
    )
    for _ in range(args.warmup):
        step(), reference()
    # The two alternate, so that load from other processes hits both alike: call by call on the CPU, which runs
    # every call to its end anyway; on a GPU in blocks of steps in a row, as the loop runs them.
    block = 5 if device.type == "cuda" else 1
    times: dict[str, list[float]] = {"step": [], "reference": []}
    while len(times["step"]) < args.steps:
        times["step"] += timed(step, block, device)
        times["reference"] += timed(reference, block, device)
    step_ms, reference_ms = (1000 * statistics.median(times[k]) for k in ("step", "reference"))
    for kind, values in times.items():  # every step, and the fastest: the figure least hurt by other processes
        print(f"{kind:9s} ms per step: " + " ".join(f"{1000 * t:.0f}" for t in values) + f"  (fastest {1000 * min(values):.0f})")
    print(f"ratio {step_ms / reference_ms:.3f} step_ms {step_ms:.1f} reference_ms {reference_ms:.1f}")


if __name__ == "__main__":
    main()
