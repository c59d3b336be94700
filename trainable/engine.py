"""The epoch driver, ``drive``: what every method's training runs through, TimeBalance's student included.

A method gives the driver a ``Trainer`` (its models, its data, its step); the driver restores the checkpoint,
prepares the models for the session (device, DDP, ``compile``), builds the optimizers the trainer asks for,
and then, each epoch: re-seeds every RNG, lets the trainer run ``steps`` steps, runs the multi-view test, and
reports one row with every metric in ``trainable.metrics.METRICS`` and a checkpoint. Randomness is re-seeded
from (seed, epoch, rank) at the start of every epoch, so a run resumed from the checkpoint of epoch k continues
exactly as the uninterrupted run would: the checkpoint needs no RNG state.

The helpers below (seeding, endless batches, epoch length, autocast, the epoch's sums) are what every method
and every stage of a pipeline shares; this module imports no method, so methods import it and not each other.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from trainable import methods, parallel
from trainable.config import TrainConfig
from trainable.data import read_index
from trainable.data.datasets import EvalClips
from trainable.data.index import DatasetIndex
from trainable.data.subsets import LabeledSubset
from trainable.data.synthetic import ensure_synthetic
from trainable.data.ucf101 import read_ucf101
from trainable.data.video import VideoReader
from trainable.evaluate import evaluate
from trainable.metrics import METRICS
from trainable.optim import Optimizers
from trainable.session import Session, to_device

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


def seed_epoch(cfg: TrainConfig, epoch: int, rank: int) -> None:
    """Every RNG from (seed, epoch, rank): an epoch draws the same whether or not the run was resumed before it."""
    seed = int(np.random.default_rng([cfg.seed, epoch, rank]).integers(2**31))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def endless_batches(
    dataset: Dataset,
    batch_size: int,
    cfg: TrainConfig,
    epoch: int,
    stream: int,
    rank: int = 0,
    world_size: int = 1,
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    device: torch.device | None = None,
) -> Iterator:
    """Batches of worker ``rank``'s share of shuffled passes over ``dataset``, without end; ``stream`` keeps
    datasets' orders apart (labeled 0, unlabeled 1, TimeBalance's pretraining 2 and fine-tuning 3).

    With ``finish`` (the device part of the augmentation, ``transforms.DeviceFinish``), the batches come finished
    and on ``device``. On a CPU with ``loader_workers`` the loader's worker processes finish them, as they collate
    each batch, so that RandAugment runs beside the training step rather than in it; on an accelerator the
    training process finishes each batch once it is on the device, where RandAugment is cheap. Each loader worker
    draws from its own torch RNG, seeded from the training process's when the epoch's loader starts, so a resumed
    epoch draws the same either way.
    """
    sampler = ShardSampler(len(dataset), cfg.seed * 1000 + stream, epoch, rank, world_size)
    device = device or torch.device("cpu")
    collate = FinishedCollate(finish) if finish is not None and cfg.loader_workers > 0 and device.type == "cpu" else None
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.loader_workers,
        pin_memory=cfg.pin_memory,
        collate_fn=collate,
    )
    if finish is None or collate is not None:
        return iter(loader)
    return (finish(to_device(batch, device)) for batch in loader)


@dataclass(frozen=True)
class FinishedCollate:
    """A loader's ``collate_fn`` that collates a batch as the default does, then finishes it (in the worker)."""

    finish: Callable[[dict[str, Any]], dict[str, Any]]

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self.finish(default_collate(items))


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


def trained_net(cfg: TrainConfig, backbone: nn.Module, head: nn.Module | None = None) -> methods.Net:
    """A model the driver trains, as every method builds it: ``batchnorm: sync`` makes its batch norm count every
    worker's clips, ``channels_last`` puts a backbone that prefers it in channels_last_3d."""
    if cfg.batchnorm == "sync":
        backbone = parallel.convert_batchnorm(backbone)
    return methods.Net(backbone, head, channels_last=cfg.channels_last and getattr(backbone, "prefers_channels_last", False))


# Sums kept over an epoch: loss parts over steps; per student model, unlabeled clips seen, accepted, correct.
SUM_KEYS = ("steps", "clips", "loss", "loss_sup", "loss_pl", "loss_ca") + tuple(
    f"{k}_{m}" for m in ("primary", "aux") for k in ("seen", "accepted", "correct")
)
Sums = dict[str, "float | torch.Tensor"]


def new_sums() -> Sums:
    """An epoch's sums before its first step; a loss term the method lacks stays NaN (its metric is NaN)."""
    sums: Sums = dict.fromkeys(SUM_KEYS, 0)
    for key in ("loss_pl", "loss_ca"):
        sums[key] = math.nan
    return sums


def add_step(sums: Sums, step: methods.StepLosses, clips: int, unlabeled_labels: torch.Tensor | None = None) -> None:
    """A step's figures added to the epoch's ``sums``, on the device.

    What the device computed is summed on the device and read once per epoch (``epoch_metrics``): an
    ``.item()`` here would make the host wait for every step to finish before it queues the next.
    """
    sums["steps"] += 1
    sums["clips"] += clips
    for key in ("loss", "loss_sup", "loss_pl", "loss_ca"):
        value = getattr(step, key)
        if value is not None:  # the first value replaces the initial 0 or NaN
            value = value.detach().double()
            sums[key] = sums[key] + value if torch.is_tensor(sums[key]) else value
    for student, mask in step.masks.items():
        sums[f"seen_{student}"] += mask.numel()
        sums[f"accepted_{student}"] += mask.sum()
        sums[f"correct_{student}"] += ((step.pseudo_labels[student] == unlabeled_labels) & mask).sum()


def epoch_metrics(sums: Sums, session: Session) -> dict[str, float]:
    """Means over steps and rates over unlabeled clips, summed over workers first.

    The sums are stacked on the training device, so the device's sums are read once, and NCCL (which
    reduces only device tensors) can sum them over workers.
    """
    stacked = [torch.as_tensor(sums[k], dtype=torch.float64, device=session.device) for k in SUM_KEYS]
    totals = session.all_reduce(torch.stack(stacked))
    s = dict(zip(SUM_KEYS, totals.tolist()))
    out = {k: s[k] / s["steps"] for k in ("loss", "loss_sup", "loss_pl", "loss_ca")}
    for m in ("primary", "aux"):
        out[f"mask_rate_{m}"] = s[f"accepted_{m}"] / s[f"seen_{m}"] if s[f"seen_{m}"] else math.nan
        out[f"pl_acc_{m}"] = s[f"correct_{m}"] / s[f"accepted_{m}"] if s[f"accepted_{m}"] else math.nan
    out["clips"] = s["clips"]
    return out


@dataclass
class RunData:
    """What the driver reads of a method's data: the index and labeled subset (for the rows), the reader (its failures),
    and the test set (this worker's share of the videos, one entry per model the method tests)."""

    index: DatasetIndex
    subset: LabeledSubset
    reader: VideoReader
    test: EvalClips


class Trainer(Protocol):
    """A method as the driver runs it: every method implements this, a pipeline method's last stage too.

    Built (by the method's constructor, under the seed of epoch 0) before the checkpoint is restored, so a
    method's models and their random initialisation are the same on a fresh run and a resumed one.
    """

    nets: dict[str, nn.Module]  # the models, on the CPU and unwrapped until the driver prepares them
    steps: int  # steps per epoch
    data: RunData
    row: dict[str, Any]  # keys added to every epoch row (TimeBalance's student: its stage)

    def optimizers(self, nets: dict[str, nn.Module]) -> Optimizers:
        """The optimizers of the prepared ``nets`` (``trainable.optim``)."""
        ...

    def train_epoch(self, nets: dict[str, nn.Module], optimizers: Optimizers, autocast: contextlib.AbstractContextManager,
                    epoch: int, session: Session) -> Sums:  # fmt: skip
        """``steps`` steps of the prepared ``nets``; the epoch's sums (``add_step``)."""
        ...


def _restore_optimizers(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's optimizer states by model; a TimeBalance student's checkpoint written before the driver
    was shared kept its one optimizer and schedule under ``optimizer`` and ``schedule``."""
    if "optimizers" in state:
        return state["optimizers"]
    return {"primary": {"optimizer": state["optimizer"], "scheduler": state["schedule"]}}


def drive(cfg: TrainConfig, session: Session, build: Callable[[TrainConfig, Session], Trainer]) -> None:
    """Train the method ``build`` makes for ``cfg.epochs`` epochs, reporting after every epoch."""
    seed_epoch(cfg, 0, session.rank)
    trainer = build(cfg, session)
    data = trainer.data
    state = session.restore()
    if state is not None:
        for role, net in trainer.nets.items():
            net.load_state_dict(state["nets"][role])
    nets = {role: session.prepare(net) for role, net in trainer.nets.items()}
    if cfg.compile:  # after the DDP wrap, as torch.compile's docs advise
        nets = {role: torch.compile(net) for role, net in nets.items()}
    optimizers = trainer.optimizers(nets)
    start = 1
    if state is not None:
        optimizers.load_state_dict(_restore_optimizers(state))
        start = state["epoch"] + 1
        was = state.get("subset_hash", state.get("split_hash"))  # the key's name in a checkpoint from before the rename
        if was != data.subset.subset_hash:
            log.warning("resuming with a different labeled subset (%s, was %s)", data.subset.subset_hash, was)

    autocast = autocast_for(cfg, session.device)
    test_loader = DataLoader(data.test, batch_size=max(1, cfg.batch_size), num_workers=cfg.loader_workers)
    if session.rank == 0:
        log.info(
            "%s: %d classes, %d labeled (subset %s) / %d unlabeled / %d test videos, %d steps per epoch",
            cfg.method, data.index.num_classes, len(data.subset.labeled), data.subset.subset_hash,
            len(data.subset.unlabeled), len(data.index.test), trainer.steps,
        )  # fmt: skip
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
        sums = trainer.train_epoch(nets, optimizers, autocast, epoch, session)
        train_time = time.perf_counter() - started
        metrics: dict[str, Any] = {**dict.fromkeys(METRICS, math.nan), **trainer.row}
        metrics.update(evaluate(nets, test_loader, session, autocast))
        metrics.update(epoch_metrics(sums, session))
        optimizers.after_epoch(metrics["loss"])
        metrics.update(
            epoch=epoch,
            epoch_time_s=time.perf_counter() - started,
            clips_per_s=metrics.pop("clips") / train_time,
            lr=optimizers.lr(),
            subset_hash=data.subset.subset_hash,
            videos_missing=len(data.index.missing),
            videos_skipped=len(data.reader.failed),
            **startup,
        )
        startup = dict.fromkeys(startup, math.nan)  # a run's start is counted once, on its first epoch
        checkpoint = None
        if session.rank == 0:
            log.info(
                "epoch %d/%d (%s)  top1 %.1f  aux_top1 %.1f  loss %.3f (sup %.3f, pl %.4f)  mask %.2f/%.2f  pl_acc %.2f/%.2f  %.1f s",
                epoch, cfg.epochs, cfg.method, metrics["top1"], metrics["aux_top1"], metrics["loss"], metrics["loss_sup"],
                metrics["loss_pl"], metrics["mask_rate_primary"], metrics["mask_rate_aux"], metrics["pl_acc_primary"],
                metrics["pl_acc_aux"], metrics["epoch_time_s"],
            )  # fmt: skip
            checkpoint = {
                "epoch": epoch,
                "nets": {role: unwrap(net).state_dict() for role, net in nets.items()},
                "optimizers": optimizers.state_dict(),
                "subset_hash": data.subset.subset_hash,
                "config": cfg.model_dump(),
                "metrics": metrics,  # the epoch's row, appended again if a run resumes from here
            }
        session.report(metrics, checkpoint)
