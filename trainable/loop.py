"""The stepped methods (supervised, FixMatch, CMPL, ActNetFormer) as the epoch driver runs them, and ``run``:
what every Ray Train worker runs (``trainable.worker``), or one process, for any method.

Each epoch is ``steps_per_epoch`` steps of ``batch_size`` labeled and ``mu * batch_size`` unlabeled clips per
worker; the driver (``trainable.engine.drive``) tests, reports and checkpoints after it. A stepped method's
structure is declared in ``trainable.catalog`` and its step composed in ``trainable.methods``; a pipeline
method's trainer lives in its own module (TimeBalance's in ``trainable.timebalance``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from trainable import catalog, methods, models, parallel, timebalance
from trainable.config import TrainConfig
from trainable.data import transforms
from trainable.data.datasets import ClipSpec, EvalClips, TrainClips
from trainable.data.subsets import labeled_subset
from trainable.data.video import VideoReader
from trainable.engine import RunData, Sums, add_step, drive, endless_batches, epoch_steps, load_index, new_sums, trained_net
from trainable.optim import Optimizers
from trainable.session import LocalSession, Session

log = logging.getLogger(__name__)


@dataclass
class Data(RunData):
    """A stepped method's data: the driver's part, and the training clips with the device part of their
    augmentation (``finish``, for a batch of ``labeled``'s or ``unlabeled``'s)."""

    labeled: TrainClips
    unlabeled: TrainClips | None
    finish: transforms.DeviceFinish


def build_data(cfg: TrainConfig, method: methods.Method, session: Session) -> Data:
    """The labeled subset's clips (and the unlabeled pool's, for a method that uses it) with the views the method
    reads, and this worker's share of the test videos."""
    index = load_index(cfg, progress=session.rank == 0)
    subset = labeled_subset(index.train, cfg.labeled_per_class, cfg.labeled_subset_seed, cfg.labeled_fraction)
    reader = VideoReader(cache=cfg.cache_decoded, decoder=cfg.video_reader)
    clips = {"primary": ClipSpec(cfg.primary_frames, cfg.primary_stride)}
    if "aux" in method.models:
        # Without temporal augmentation both models see one clip at one frame rate (Table S2's rows).
        clips["aux"] = ClipSpec(cfg.aux_frames, cfg.aux_stride if cfg.temporal_aug else cfg.primary_stride)
    opts = transforms.SpatialOptions(
        input_size=cfg.input_size,
        resize_min=cfg.resize_min,
        resize_max=cfg.resize_max,
        randaug_ops=cfg.randaug_ops,
        randaug_magnitude=cfg.randaug_magnitude,
        cutout=cfg.cutout,
    )
    # The loader crops every view alike; the device finishes each as its kind (without spatial_aug strong is weak).
    crop = transforms.geometric(opts)
    views: dict[str, transforms.Augmentation] = {"labeled": "weak"}
    shared = not cfg.temporal_aug
    labeled = TrainClips(subset.labeled, reader, clips, {"labeled": crop}, shared_start=shared)
    unlabeled = None
    if method.uses_unlabeled:
        views.update(weak="weak", strong="strong" if cfg.spatial_aug else "weak")
        unlabeled = TrainClips(subset.unlabeled, reader, clips, {"weak": crop, "strong": crop}, shared_start=shared)
    finish = transforms.DeviceFinish(opts, {f"{m}_{a}": view for m in clips for a, view in views.items()})
    shard = index.test[session.rank :: session.world_size]
    test = EvalClips(shard, reader, clips, cfg.test_clips, transforms.test_views(opts, cfg.test_crops))
    return Data(index, subset, reader, test, labeled, unlabeled, finish)


def build_nets(cfg: TrainConfig, method: methods.Method, num_classes: int) -> dict[str, nn.Module]:
    """The method's models, on the CPU, each a backbone and (contrastive methods) its projection head."""
    backbones = {"primary": (cfg.primary_backbone, cfg.primary_frames)}
    if "aux" in method.models:
        backbones["aux"] = (str(cfg.aux_backbone), cfg.aux_frames)
    nets: dict[str, nn.Module] = {}
    for role, (name, frames) in backbones.items():
        backbone = models.build(name, num_classes, frames, cfg.input_size, cfg.scale)
        head = models.ProjectionHead(backbone.num_features, out_features=cfg.projection_dim) if cfg.uses_contrastive else None
        nets[role] = trained_net(cfg, backbone, head)
    return nets


class Stepped:
    """A stepped method's ``engine.Trainer``: its models, its data, and ``steps`` of ``train_step`` an epoch."""

    def __init__(self, cfg: TrainConfig, session: Session) -> None:
        self.cfg = cfg
        self.method = methods.get(cfg.method)
        self.data = build_data(cfg, self.method, session)
        self.nets = build_nets(cfg, self.method, self.data.index.num_classes)
        self.steps = epoch_steps(cfg, len(self.data.subset.unlabeled), cfg.mu * cfg.batch_size * session.world_size)
        self.row: dict[str, Any] = {}

    def optimizers(self, nets: dict[str, nn.Module]) -> Optimizers:
        return Optimizers.cosine(self.cfg, nets, self.steps)

    def train_epoch(self, nets: dict[str, nn.Module], optimizers: Optimizers, autocast: contextlib.AbstractContextManager,
                    epoch: int, session: Session) -> Sums:  # fmt: skip
        return _train_epoch(self.cfg, self.method, nets, self.data, optimizers, autocast, epoch, self.steps, session)


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
) -> Sums:
    for net in nets.values():
        net.train()
    shard = session.rank, session.world_size
    finished = {"finish": data.finish, "device": session.device}
    labeled = endless_batches(data.labeled, cfg.batch_size, cfg, epoch, 0, *shard, **finished)
    unlabeled = endless_batches(data.unlabeled, cfg.mu * cfg.batch_size, cfg, epoch, 1, *shard, **finished) if data.unlabeled else None
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
        lab = next(labeled)
        unl = next(unlabeled) if unlabeled is not None else None
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
    sums: Sums,
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
    add_step(sums, step, len(lab["label"]) + (len(unl["label"]) if unl is not None else 0), unl["label"] if unl is not None else None)


# The trainer of each pipeline method (declared with stages in ``trainable.catalog``); every other method is stepped.
PIPELINES: dict[str, Callable[[TrainConfig, Session], Any]] = {"timebalance": timebalance.Student}
if sorted(PIPELINES) != sorted(name for name, spec in catalog.METHODS.items() if spec.stages):
    raise ImportError(f"trainable.loop runs pipelines {sorted(PIPELINES)} but trainable.catalog declares others")


def run(cfg: TrainConfig, session: Session) -> None:
    """Train ``cfg.method`` for ``cfg.epochs`` epochs through the driver, reporting after every epoch."""
    cfg.check_paths()
    drive(cfg, session, PIPELINES.get(cfg.method, Stepped))


def run_local(config: dict[str, Any], on_report: Any = print, stage_root: str | None = None) -> LocalSession:
    """Run the loop in this process without Ray (benchmarks, debugging); returns the session with the last state
    and, for a pipeline method, the stage results it used (``stages.sink``). ``stage_root``: where stage results are
    kept, so runs that share one reuse them; None: a temporary folder of this run's own."""
    session = LocalSession(on_report=on_report, stage_root=stage_root)
    run(TrainConfig.parse(config), session)
    return session
