"""The per-worker training loop, ``run``: what every Ray Train worker runs (``trainable.worker``), or one process.

Each epoch is ``steps_per_epoch`` steps of ``batch_size`` labeled and ``mu * batch_size`` unlabeled clips per
worker, then the multi-view test, then one ``report`` with every metric in ``trainable.metrics.METRICS`` and a checkpoint.
Randomness is re-seeded from (seed, epoch, rank) at the start of every epoch, so a run resumed from the
checkpoint of epoch k continues exactly as the uninterrupted run would: the checkpoint needs no RNG state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from trainable import catalog, methods, models, parallel
from trainable.config import TrainConfig
from trainable.data import read_index, transforms
from trainable.data.datasets import ClipSpec, EvalClips, TrainClips
from trainable.data.index import DatasetIndex
from trainable.data.splits import LabeledSplit, labeled_split
from trainable.data.synthetic import ensure_synthetic
from trainable.data.ucf101 import read_ucf101
from trainable.data.video import VideoReader
from trainable.evaluate import evaluate
from trainable.models.resnet3d import ResNet3d
from trainable.session import LocalSession, Session, to_device

log = logging.getLogger(__name__)


def load_index(cfg: TrainConfig, progress: bool = True) -> DatasetIndex:
    """The dataset's classes and video lists; the synthetic dataset is generated here if missing."""
    if cfg.dataset == "synthetic":
        return read_ucf101(ensure_synthetic(cfg.synthetic_spec(), cfg.synthetic_root, progress=progress))
    return read_index(cfg.dataset, str(cfg.data_root), cfg.split)


class ShardSampler(Sampler[int]):
    """An endless stream of this worker's share of shuffled passes over a dataset.

    Every pass is a permutation drawn from (seed, epoch); worker ``rank`` takes every ``world_size``-th index.
    Endless, so that a labeled set smaller than a batch still fills batches.
    """

    def __init__(self, size: int, seed: int, epoch: int, rank: int, world_size: int) -> None:
        self.size, self.rank, self.world_size = size, rank, world_size
        self.rng = np.random.default_rng([seed, epoch])

    def __iter__(self) -> Iterator[int]:
        while True:
            yield from self.rng.permutation(self.size)[self.rank :: self.world_size].tolist()


@dataclass
class Data:
    index: DatasetIndex
    split: LabeledSplit
    labeled: TrainClips
    unlabeled: TrainClips | None
    test: EvalClips
    reader: VideoReader
    finish: transforms.DeviceFinish  # the augmentations' device part, for a batch of ``labeled``'s or ``unlabeled``'s


def build_data(cfg: TrainConfig, method: methods.Method, session: Session) -> Data:
    index = load_index(cfg, progress=session.rank == 0)
    split = labeled_split(index.train, cfg.labeled_per_class, cfg.labeled_seed, cfg.labeled_fraction)
    reader = VideoReader(cache=cfg.cache_decoded, decoder=cfg.video_reader)
    clips = {"primary": ClipSpec(cfg.primary_frames, cfg.primary_stride)}
    if "aux" in method.models:
        # Without temporal augmentation both models see one clip at one frame rate (Table S2's rows).
        clips["aux"] = ClipSpec(cfg.aux_frames, cfg.aux_stride if cfg.temporal_aug else cfg.primary_stride)
    opts = transforms.SpatialOptions(
        input_size=cfg.input_size,
        scale_min=cfg.scale_min,
        scale_max=cfg.scale_max,
        randaug_ops=cfg.randaug_ops,
        randaug_magnitude=cfg.randaug_magnitude,
        cutout=cfg.cutout,
    )
    # The loader crops every view alike; the device finishes each as its kind (without spatial_aug strong is weak).
    crop = transforms.geometric(opts)
    views: dict[str, transforms.View] = {"labeled": "weak"}
    shared = not cfg.temporal_aug
    labeled = TrainClips(split.labeled, reader, clips, {"labeled": crop}, shared_start=shared)
    unlabeled = None
    if method.uses_unlabeled:
        views.update(weak="weak", strong="strong" if cfg.spatial_aug else "weak")
        unlabeled = TrainClips(split.unlabeled, reader, clips, {"weak": crop, "strong": crop}, shared_start=shared)
    finish = transforms.DeviceFinish(opts, {f"{m}_{a}": view for m in clips for a, view in views.items()})
    shard = index.test[session.rank :: session.world_size]
    test = EvalClips(shard, reader, clips, cfg.views_clips, transforms.test_views(opts, cfg.views_crops))
    return Data(index, split, labeled, unlabeled, test, reader, finish)


def seed_epoch(cfg: TrainConfig, epoch: int, rank: int) -> None:
    """Every RNG from (seed, epoch, rank): an epoch draws the same whether or not the run was resumed before it."""
    seed = int(np.random.default_rng([cfg.seed, epoch, rank]).integers(2**31))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def endless_batches(
    dataset: Dataset, batch_size: int, cfg: TrainConfig, epoch: int, stream: int, rank: int = 0, world_size: int = 1
) -> Iterator:
    """Batches of worker ``rank``'s share of shuffled passes over ``dataset``, without end; ``stream`` keeps two
    datasets' orders apart (labeled 0, unlabeled 1)."""
    sampler = ShardSampler(len(dataset), cfg.seed * 1000 + stream, epoch, rank, world_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.loader_workers,
        pin_memory=cfg.pin_memory,
    )
    return iter(loader)


def epoch_steps(cfg: TrainConfig, videos: int, batch: int) -> int:
    """Steps in an epoch: ``steps_per_epoch`` when set, else one pass over ``videos`` in batches of ``batch`` (all
    workers' together), so every method, and every stage of a pipeline, counts an epoch alike."""
    return cfg.steps_per_epoch or max(1, math.ceil(videos / batch))


def autocast_for(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast on ``device`` with ``precision: bf16``; off (a no-op context) otherwise. Losses are computed
    in float32 outside it."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module under torch.compile's and DDP's wrappers, whose state_dict keys are the model's own."""
    net = getattr(net, "_orig_mod", net)
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


class Optimizers:
    """One optimizer, learning-rate schedule and gradient clip per model.

    Per model because a CNN and a transformer trained from scratch may want different optimizers (the
    config's ``aux_optimizer``, ``aux_lr``, ``aux_weight_decay``), and because clipping the norm of both
    models' gradients together would let one model's large gradient shrink the other's step.
    """

    def __init__(self, cfg: TrainConfig, nets: dict[str, nn.Module], steps_per_epoch: int) -> None:
        self.clip = cfg.grad_clip
        self.nets = nets
        warmup, total = round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        for role, net in nets.items():
            kind, lr, weight_decay = cfg.optimizer_of(role)
            # fused (CPU and CUDA): one pass over the parameters per step, not one per operation of the update
            # as foreach, the default, makes (SGD on the paper's two models, CPU: 55 ms instead of 250 ms).
            # SGD's update is bitwise the same, AdamW's within a rounding.
            if kind == "sgd":
                optimizer: torch.optim.Optimizer = torch.optim.SGD(
                    net.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=weight_decay, fused=True
                )
            else:
                optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
            self.optimizers[role] = optimizer
            self.schedulers[role] = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, total))

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Clip each model's gradient, step its optimizer, advance its schedule."""
        for role, optimizer in self.optimizers.items():
            if self.clip is not None:
                nn.utils.clip_grad_norm_(self.nets[role].parameters(), self.clip)
            optimizer.step()
            self.schedulers[role].step()

    def lr(self) -> float:
        """The primary's current learning rate (what the epochs table records)."""
        return self.schedulers["primary"].get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return {
            role: {"optimizer": optimizer.state_dict(), "scheduler": self.schedulers[role].state_dict()}
            for role, optimizer in self.optimizers.items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for role, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[role]["optimizer"])
            self.schedulers[role].load_state_dict(state[role]["scheduler"])


def build_nets(cfg: TrainConfig, method: methods.Method, num_classes: int) -> dict[str, nn.Module]:
    """The method's models, on the CPU, each a backbone and (contrastive methods) its projection head."""
    backbones = {"primary": (cfg.primary_backbone, cfg.primary_frames)}
    if "aux" in method.models:
        backbones["aux"] = (str(cfg.aux_backbone), cfg.aux_frames)
    nets: dict[str, nn.Module] = {}
    for role, (name, frames) in backbones.items():
        backbone = models.build(name, num_classes, frames, cfg.input_size, cfg.scale)
        if cfg.batchnorm == "sync":
            backbone = parallel.convert_batchnorm(backbone)
        head = models.ProjectionHead(backbone.num_features, out_features=cfg.projection_dim) if cfg.uses_contrastive else None
        nets[role] = methods.Net(backbone, head, channels_last=cfg.channels_last and isinstance(backbone, ResNet3d))
    return nets


def run(cfg: TrainConfig, session: Session) -> None:
    """Train ``cfg.method`` for ``cfg.epochs`` epochs, reporting after every epoch."""
    cfg.check_paths()
    if catalog.METHODS[cfg.method].stages:  # a pipeline: its stages, then its own loop
        from trainable import timebalance

        timebalance.run(cfg, session)
        return
    method = methods.get(cfg.method)
    seed_epoch(cfg, 0, session.rank)
    data = build_data(cfg, method, session)
    num_classes = data.index.num_classes

    nets = build_nets(cfg, method, num_classes)
    state = session.restore()
    if state is not None:
        for role, net in nets.items():
            net.load_state_dict(state["nets"][role])
    nets = {role: session.prepare(net) for role, net in nets.items()}
    if cfg.compile:  # after the DDP wrap, as torch.compile's docs advise
        nets = {role: torch.compile(net) for role, net in nets.items()}
    unlabeled_batch = cfg.mu * cfg.batch_size
    pool = len(data.split.unlabeled)
    steps = epoch_steps(cfg, pool, unlabeled_batch * session.world_size)
    optimizers = Optimizers(cfg, nets, steps)
    start = 1
    if state is not None:
        optimizers.load_state_dict(state["optimizers"])
        start = state["epoch"] + 1
        if state["split_hash"] != data.split.split_hash:
            log.warning("resuming with a different labeled split (%s, was %s)", data.split.split_hash, state["split_hash"])

    autocast = autocast_for(cfg, session.device)
    test_loader = DataLoader(data.test, batch_size=max(1, cfg.batch_size), num_workers=cfg.loader_workers)
    if session.rank == 0:
        log.info(
            "%s: %d classes, %d labeled (split %s) / %d unlabeled / %d test videos, %d steps per epoch",
            cfg.method, num_classes, len(data.split.labeled), data.split.split_hash, pool, len(data.index.test), steps,
        )
        if data.index.missing:
            log.warning(
                "%d listed videos are missing and skipped (first: %s); python -m trainable.data check lists them",
                len(data.index.missing), ", ".join(data.index.missing[:3]),
            )

    if start > cfg.epochs and state is not None and "metrics" in state:
        # Restored after its last epoch (a search killed before it recorded the trial's end): report that
        # epoch again, without a checkpoint, so the scheduler learns how the run ended.
        session.report(state["metrics"], None)
    # How long this run took to reach its first step, past what the session's own start took: imports of the
    # loop, the dataset's index, the models, the checkpoint (the first epoch's row records both).
    startup: dict[str, float] = {"startup_s": session.startup_s, "setup_s": time.time() - session.started}
    for epoch in range(start, cfg.epochs + 1):
        started = time.perf_counter()
        seed_epoch(cfg, epoch, session.rank)
        sums = _train_epoch(cfg, method, nets, data, optimizers, autocast, epoch, steps, session)
        train_time = time.perf_counter() - started
        metrics: dict[str, Any] = evaluate(nets, test_loader, session, autocast)
        metrics.update(_epoch_metrics(sums, session))
        metrics.update(
            epoch=epoch,
            epoch_time_s=time.perf_counter() - started,
            clips_per_s=metrics.pop("clips") / train_time,
            lr=optimizers.lr(),
            split_hash=data.split.split_hash,
            videos_missing=len(data.index.missing),
            videos_skipped=len(data.reader.failed),
            **startup,
        )
        startup = dict.fromkeys(startup, math.nan)  # a run's start is counted once, on its first epoch
        if session.rank == 0:
            log.info(
                "epoch %d/%d  top1 %.1f  aux_top1 %.1f  loss %.3f  mask %.2f/%.2f  pl_acc %.2f/%.2f  %.1f s",
                epoch, cfg.epochs, metrics["top1"], metrics["aux_top1"], metrics["loss"],
                metrics["mask_rate_primary"], metrics["mask_rate_aux"], metrics["pl_acc_primary"],
                metrics["pl_acc_aux"], metrics["epoch_time_s"],
            )
        checkpoint = None
        if session.rank == 0:
            checkpoint = {
                "epoch": epoch,
                "nets": {role: unwrap(net).state_dict() for role, net in nets.items()},
                "optimizers": optimizers.state_dict(),
                "split_hash": data.split.split_hash,
                "config": cfg.model_dump(),
                "metrics": metrics,  # the epoch's row, appended again if a run resumes from here
            }
        session.report(metrics, checkpoint)


# Sums kept over an epoch: loss parts over steps; per student model, unlabeled clips seen, accepted, correct.
_SUM_KEYS = ("steps", "clips", "loss", "loss_sup", "loss_pl", "loss_ca") + tuple(
    f"{k}_{m}" for m in ("primary", "aux") for k in ("seen", "accepted", "correct")
)


def new_sums() -> dict[str, float | torch.Tensor]:
    """An epoch's sums before its first step; a loss term the method lacks stays NaN (its metric is NaN)."""
    sums: dict[str, float | torch.Tensor] = dict.fromkeys(_SUM_KEYS, 0)
    for key in ("loss_pl", "loss_ca"):
        sums[key] = math.nan
    return sums


def _train_epoch(
    cfg: TrainConfig,
    method: methods.Method,
    nets: dict[str, nn.Module],
    data: Data,
    optimizers: Optimizers,
    autocast: contextlib.AbstractContextManager,
    epoch: int,
    steps: int,
    session: Session,
) -> dict[str, float | torch.Tensor]:
    for net in nets.values():
        net.train()
    shard = session.rank, session.world_size
    labeled = endless_batches(data.labeled, cfg.batch_size, cfg, epoch, 0, *shard)
    unlabeled = endless_batches(data.unlabeled, cfg.mu * cfg.batch_size, cfg, epoch, 1, *shard) if data.unlabeled else None
    ramp_steps = cfg.unsup_warmup_epochs * steps
    gather = parallel.gather_rows if cfg.contrastive_negatives == "global" else None
    sums = new_sums()
    for i in range(steps):
        global_step = (epoch - 1) * steps + i
        ramp = min(1.0, global_step / ramp_steps) if ramp_steps > 0 else 1.0
        weights = methods.Weights(
            threshold=cfg.threshold,
            gamma=cfg.gamma * ramp,
            beta=cfg.beta * ramp,
            temperature=cfg.temperature,
            symmetric=cfg.contrastive_symmetric,
        )
        lab = data.finish(to_device(next(labeled), session.device))
        unl = data.finish(to_device(next(unlabeled), session.device)) if unlabeled is not None else None
        train_step(method, nets, optimizers, autocast, lab, unl, weights, sums, cfg.batchnorm == "joint", gather)
    return sums


def train_step(
    method: methods.Method,
    nets: dict[str, nn.Module],
    optimizers: Optimizers,
    autocast: contextlib.AbstractContextManager,
    lab: dict[str, Any],
    unl: dict[str, Any] | None,
    weights: methods.Weights,
    sums: dict[str, float | torch.Tensor],
    joint_batchnorm: bool = False,
    gather: Callable[[torch.Tensor], tuple[torch.Tensor, int]] | None = None,
) -> None:
    """One step of every model on batches already on the device, its figures added to ``sums``.

    Apart from the epoch so that ``bench/step.py`` times exactly the loop's step, not a copy of it.
    """
    with autocast:
        logits, projections = method.forward(nets, lab, unl, joint_batchnorm=joint_batchnorm)
    step = method.losses(logits, projections, lab["label"], weights, gather)
    optimizers.zero_grad()
    step.loss.backward()
    optimizers.step()

    # What the device computed is summed on the device and read once per epoch (``_epoch_metrics``): an
    # ``.item()`` here would make the host wait for every step to finish before it queues the next.
    sums["steps"] += 1
    sums["clips"] += len(lab["label"]) + (len(unl["label"]) if unl is not None else 0)
    for key in ("loss", "loss_sup", "loss_pl", "loss_ca"):
        value = getattr(step, key)
        if value is not None:  # the first value replaces the initial 0 or NaN
            value = value.detach().double()
            sums[key] = sums[key] + value if torch.is_tensor(sums[key]) else value
    for student, mask in step.masks.items():
        sums[f"seen_{student}"] += mask.numel()
        sums[f"accepted_{student}"] += mask.sum()
        sums[f"correct_{student}"] += ((step.pseudo_labels[student] == unl["label"]) & mask).sum()


def _epoch_metrics(sums: dict[str, float | torch.Tensor], session: Session) -> dict[str, float]:
    """Means over steps and rates over unlabeled clips, summed over workers first.

    The sums are stacked on the training device, so the device's sums are read once, and NCCL (which
    reduces only device tensors) can sum them over workers.
    """
    stacked = [torch.as_tensor(sums[k], dtype=torch.float64, device=session.device) for k in _SUM_KEYS]
    totals = session.all_reduce(torch.stack(stacked))
    s = dict(zip(_SUM_KEYS, totals.tolist()))
    out = {k: s[k] / s["steps"] for k in ("loss", "loss_sup", "loss_pl", "loss_ca")}
    for m in ("primary", "aux"):
        out[f"mask_rate_{m}"] = s[f"accepted_{m}"] / s[f"seen_{m}"] if s[f"seen_{m}"] else math.nan
        out[f"pl_acc_{m}"] = s[f"correct_{m}"] / s[f"accepted_{m}"] if s[f"accepted_{m}"] else math.nan
    out["clips"] = s["clips"]
    return out


def run_local(config: dict[str, Any], on_report: Any = print, stage_root: str | None = None) -> LocalSession:
    """Run the loop in this process without Ray (benchmarks, debugging); returns the session with the last state
    and, for a pipeline method, the stage results it used (``stage_sink``). ``stage_root``: where stage results are
    kept, so runs that share one reuse them; None: a temporary folder of this run's own."""
    session = LocalSession(on_report=on_report, stage_root=stage_root)
    run(TrainConfig.parse(config), session)
    return session
