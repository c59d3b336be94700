"""TimeBalance (CVPR 2023; docs/method.md §2): the teachers' self-supervised objectives.

A teacher is a 3D-ResNet and the paper's projection head (``models.TeacherProjection``). It learns from
``ConsecutiveClips`` batches: ``n`` consecutive clips of each video in two augmentations and one long clip over
the same stretch. The temporally-invariant teacher pulls a video's clips together (``L_I``, Eq. 1); the
temporally-distinctive one tells them apart, on pooled features (``L_D1``, Eq. 3) and on the long clip's
unpooled time steps (``L_D2``, Supp. D).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from trainable import losses, methods, models
from trainable.config import TrainConfig
from trainable.data import transforms
from trainable.data.datasets import ClipSpec, ConsecutiveClips, EvalClips, TrainClips
from trainable.data.index import DatasetIndex
from trainable.data.subsets import LabeledSubset, labeled_subset
from trainable.data.video import VideoReader
from trainable.engine import RunData, Sums, add_step, autocast_for, endless_batches, epoch_steps, load_index, new_sums, seed_epoch, trained_net
from trainable.evaluate import evaluate
from trainable.models.resnet3d import ResNet3d
from trainable.optim import Optimizers
from trainable.session import LocalSession, Session
from trainable.stages import StageResult, StageStore, stage_key

log = logging.getLogger(__name__)

Objective = Literal["invariant", "distinctive"]
CONSECUTIVE = ("clips_a", "clips_b")  # (B, n, T, H, W, C) entries of a ConsecutiveClips batch


class Teacher(nn.Module):
    """A 3D-ResNet backbone and its projection head, one module so that one optimizer and DDP wrap both."""

    def __init__(self, backbone: ResNet3d, projection: nn.Module) -> None:
        super().__init__()
        if not isinstance(backbone, ResNet3d):
            raise TypeError(f"a TimeBalance teacher needs a 3D-ResNet (its unpooled loss reads every frame), got {type(backbone).__name__}")
        self.backbone = backbone
        self.projection = projection

    def project(self, clips: torch.Tensor) -> torch.Tensor:
        """``(B, n, C, T, H, W)`` clips to ``(B, n, d)`` projections, in float32 whatever autocast computed them in:
        the contrastive losses divide cosines by a temperature of 0.1 before ``exp``."""
        videos, n = clips.shape[:2]
        return self.projection(self.backbone.forward_features(clips.flatten(0, 1))).float().view(videos, n, -1)

    def project_slices(self, long: torch.Tensor, n: int) -> torch.Tensor:
        """The long clip's time axis cut into ``n`` equal parts, each pooled and projected: ``(B, n, d)``."""
        steps = self.backbone.forward_temporal(long)  # (B, T, C)
        videos, frames, channels = steps.shape
        if frames % n:
            raise ValueError(f"the long clip's {frames} time steps do not split into {n} equal parts")
        return self.projection(steps.view(videos, n, frames // n, channels).mean(dim=2).flatten(0, 1)).float().view(videos, n, -1)


def finish(batch: dict[str, Any], device_finish: transforms.DeviceFinish) -> dict[str, Any]:
    """The device part of the augmentation for a ConsecutiveClips batch: every clip, both copies and the long one,
    as a strong view (the paper's random crops and colour changes), float ``(B, n, C, T, H, W)`` and ``(B, C, T, H, W)``."""
    out = dict(batch)
    for key in CONSECUTIVE:
        videos, n = batch[key].shape[:2]
        flat = device_finish.strong(batch[key].flatten(0, 1))
        out[key] = flat.view(videos, n, *flat.shape[1:])
    out["long"] = device_finish.strong(batch["long"])
    return out


def pretrain_loss(objective: Objective, teacher: Teacher, batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """The teacher's self-supervised loss on a finished batch: ``L_I``, or ``L_D = L_D1 + L_D2``."""
    z = teacher.project(batch["clips_a"])
    if objective == "invariant":
        return losses.invariant_loss(z, temperature)
    z_augmented = teacher.project(batch["clips_b"])
    slices = teacher.project_slices(batch["long"], z.shape[1])
    return losses.distinctive_pooled_loss(z, z_augmented, temperature) + losses.distinctive_unpooled_loss(z, slices, temperature)


@torch.no_grad()
def similarity(invariant: Teacher, distinctive: Teacher, clips: torch.Tensor) -> torch.Tensor:
    """``s`` of each video (Eq. 5–6) from its ``n`` clips ``(B, n, C, T, H, W)``: how alike the video's clips look
    to both pretrained teachers. Computed once per video, after pretraining (Algorithm 1, line 16), in eval mode."""
    modes = (invariant.training, distinctive.training)
    invariant.eval(), distinctive.eval()
    try:
        return losses.temporal_similarity(invariant.project(clips), distinctive.project(clips))
    finally:
        invariant.train(modes[0]), distinctive.train(modes[1])


def train_stage(
    net: nn.Module,
    step_loss: Callable[[dict[str, Any]], torch.Tensor],
    batches: Iterator[dict[str, Any]],
    device: torch.device,
    epochs: int,
    steps: int,
    lr: float,
    warmup_epochs: int,
    on_epoch: Callable[[dict[str, Any]], None],
    autocast: contextlib.AbstractContextManager = contextlib.nullcontext(),
) -> None:
    """One teacher stage (the stages are not checkpointed, so not the driver's epochs: a stage interrupted is built
    again): Adam with the paper's schedule (``optim.Optimizers.paper``) over ``epochs`` of ``steps`` batches, finished and on
    ``device`` (``engine.endless_batches``), each scored by ``step_loss`` under ``autocast`` (bf16 with ``precision: bf16``); ``on_epoch`` is told
    each epoch's mean loss and learning rate."""
    net.train()
    optimizers = Optimizers.paper({"teacher": net}, lr, 0.0, warmup_epochs, steps, clip=None)
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device, read once an epoch
        for _ in range(steps):
            with autocast:
                loss = step_loss(next(batches))
            optimizers.zero_grad()
            loss.backward()
            optimizers.step()
            total += loss.detach()
        mean = total.item() / steps
        optimizers.after_epoch(mean)
        on_epoch({"epoch": epoch, "loss": mean, "lr": optimizers.lr(), "epoch_time_s": time.perf_counter() - started})


def pretrain(objective: Objective, teacher: Teacher, temperature: float, **stage: Any) -> None:
    """Self-supervised pretraining of one teacher (Algorithm 1, lines 8–15) on finished ConsecutiveClips batches
    (``finish``); ``stage``: ``train_stage``'s other arguments."""
    train_stage(teacher, lambda batch: pretrain_loss(objective, teacher, batch, temperature), **stage)


def finetune(backbones: dict[str, ResNet3d], view: str, **stage: Any) -> None:
    """The pretrained teachers' backbones and classifiers trained on the labeled clips with cross entropy
    (Algorithm 1, lines 17–21), together: one Adam over both minimises the sum of their losses, which is each
    teacher's own loss for its own weights; ``view`` names the batch's clips (a ``TrainClips`` entry, finished);
    ``stage``: ``train_stage``'s arguments."""
    both = nn.ModuleDict(backbones)

    def step_loss(batch: dict[str, Any]) -> torch.Tensor:
        return sum(losses.supervised_loss(net(batch[view]).float(), batch["label"]) for net in both.values())

    train_stage(both, step_loss, **stage)


def student_losses(
    labeled_logits: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    p_invariant: torch.Tensor,
    p_distinctive: torch.Tensor,
    s: torch.Tensor,
    omega: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's loss (Eq. 2, 4, 7, 8; Supp. D.1): cross entropy on the labeled clips, plus ``omega`` times the
    distillation of the teachers' mix on every clip of the step, labeled ones included (their label unused).

    ``logits`` are the student's on all of the step's clips and ``p_*``, ``s`` the teachers' probabilities and
    the videos' similarity, row for row. Returns (total, supervised, distillation).
    """
    supervised = losses.supervised_loss(labeled_logits, labels)
    distilled = losses.distillation_loss(logits, losses.teacher_mix(p_invariant, p_distinctive, s))
    return supervised + omega * distilled, supervised, distilled


# The run: three shared stages (``trainable.stages``), then the student, the trial's own training.

# What a teacher's pretraining depends on, beyond the training videos themselves; a key not listed here (the
# student's omega, lr, epochs, the labeled subset) can change without retraining the teachers.
PRETRAIN_KEYS = (
    "dataset", "data_root", "split", "primary_backbone", "scale", "input_size", "resize_min", "resize_max",
    "clips_per_video", "ssl_frames", "ssl_stride", "ssl_batch_size", "ssl_temperature", "pretrain_epochs",
    "teacher_lr", "teacher_warmup_epochs", "steps_per_epoch", "precision", "seed",
)  # fmt: skip
# Fine-tuning adds the labeled subset (its hash), the clips the student will show the teachers, its own length.
FINETUNE_KEYS = ("primary_frames", "primary_stride", "finetune_epochs", "batch_size", "steps_per_epoch", "teacher_lr",
                 "teacher_warmup_epochs", "test_clips", "test_crops", "seed")  # fmt: skip
TEACHER_FILE = "teacher.pt"
SIMILARITY_FILE = "similarity.json"


@dataclass
class Context:
    """What every stage of one run reads: the config, the data, where results go and who this run is."""

    cfg: TrainConfig
    session: Session
    index: DatasetIndex
    subset: LabeledSubset
    reader: VideoReader
    opts: transforms.SpatialOptions
    stages: StageStore

    @property
    def device(self) -> torch.device:
        return self.session.device

    def data_depends(self) -> dict[str, Any]:
        """The training videos' identity: their names and labels, and how the synthetic ones were made."""
        names = "\n".join(f"{r.name}\t{r.label}" for r in sorted(self.index.train, key=lambda r: r.name))
        synthetic = {k: v for k, v in self.cfg.model_dump().items() if k.startswith("synthetic_") and k != "synthetic_root"}
        return {"train_videos": hashlib.sha256(names.encode()).hexdigest()[:16], **(synthetic if self.cfg.dataset == "synthetic" else {})}

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_for(self.cfg, self.device)

    def backbone(self, num_classes: int, frames: int) -> ResNet3d:
        """The config's backbone, as teachers and student all use it."""
        return models.build(self.cfg.primary_backbone, num_classes, frames, self.cfg.input_size, self.cfg.scale)

    def stage(self, stage: str, depends: dict[str, Any], build: Callable[[Path, str], None]) -> StageResult:
        """The stage's result, built here by ``build(folder, key)`` unless it exists or another run builds it;
        rank 0 records in the ``stages`` table which result this trial used and whether it built it."""
        key = stage_key(stage, depends)
        started = time.monotonic()
        result = self.stages.get(stage, depends, lambda folder: build(folder, key), owner=self.session.stages.owner)
        built_here = result.info.get("owner") == self.session.stages.owner  # also when an earlier attempt of this trial built it
        # Each worker says what it did: of a trial's workers exactly one builds a stage, the others wait for it.
        log.info("stage %s %s: rank %d %s", stage, result.key[:8], self.session.rank,
                 "built it" if not result.reused else f"reused it after {time.monotonic() - started:.1f} s")  # fmt: skip
        if self.session.rank == 0:
            self.session.stages.sink.write_stage({
                "stage": stage, "stage_key": result.key, "reused": not built_here, "built_by": result.info.get("owner"),
                "build_s": result.info.get("seconds"), "waited_s": 0.0 if built_here else time.monotonic() - started,
                "path": result.location,
            })  # fmt: skip
        return result

    def reporter(self, stage: str, key: str, epochs: int) -> Callable[[dict[str, Any]], None]:
        """Writes a stage's epoch rows (``stage-<stage>-<key>`` in the epochs table) and logs them."""

        def on_epoch(metrics: dict[str, Any]) -> None:
            self.session.stages.sink.write_stage_epoch(stage, key, metrics)
            extra = "".join(f"  {k} {metrics[k]:.1f}" for k in ("top1", "aux_top1") if k in metrics)
            log.info("%s %s: epoch %d/%d  loss %.4f  lr %.2g%s  %.1f s", stage, key[:8], metrics["epoch"], epochs,
                     metrics["loss"], metrics["lr"], extra, metrics["epoch_time_s"])  # fmt: skip

        return on_epoch

    def teacher(self, num_classes: int) -> Teacher:
        backbone = self.backbone(num_classes, self.cfg.ssl_frames)
        return Teacher(backbone, models.TeacherProjection(backbone.num_features))

    def consecutive(self, augment: transforms.Transform, pretraining: bool = True) -> ConsecutiveClips:
        clip = ClipSpec(self.cfg.ssl_frames, self.cfg.ssl_stride)
        return ConsecutiveClips(self.index.train, self.reader, clip, self.cfg.clips_per_video, augment, pretraining)

    def test_set(self, models_: tuple[str, ...], rank: int = 0, world_size: int = 1) -> EvalClips:
        """The multi-view test set, this worker's share; one entry per name in ``models_`` (the same clips)."""
        spec = ClipSpec(self.cfg.primary_frames, self.cfg.primary_stride)
        views = transforms.test_views(self.opts, self.cfg.test_crops)
        return EvalClips(self.index.test[rank::world_size], self.reader, dict.fromkeys(models_, spec), self.cfg.test_clips, views)


def pretrain_stage(ctx: Context, objective: Objective) -> StageResult:
    """One teacher's self-supervised pretraining on every training video (labels unused), shared by key."""
    cfg, stage = ctx.cfg, f"pretrain_{objective}"
    depends = {"objective": objective, **{k: getattr(cfg, k) for k in PRETRAIN_KEYS}, **ctx.data_depends()}

    def build(folder: Path, key: str) -> None:
        seed_epoch(cfg, 0, 0)
        torch.manual_seed(int(hashlib.sha256(stage.encode()).hexdigest()[:8], 16) + cfg.seed)  # two teachers, two inits
        teacher = ctx.teacher(ctx.index.num_classes).to(ctx.device)
        data = ctx.consecutive(transforms.geometric(ctx.opts))
        steps = epoch_steps(cfg, len(data), cfg.ssl_batch_size)
        strong = functools.partial(finish, device_finish=transforms.DeviceFinish(ctx.opts, {}))
        batches = endless_batches(data, cfg.ssl_batch_size, cfg, 0, 2, finish=strong, device=ctx.device)
        pretrain(objective, teacher, cfg.ssl_temperature, batches=batches, device=ctx.device,
                 epochs=cfg.pretrain_epochs, steps=steps, lr=cfg.teacher_lr, warmup_epochs=cfg.teacher_warmup_epochs,
                 on_epoch=ctx.reporter(stage, key, cfg.pretrain_epochs), autocast=ctx.autocast())  # fmt: skip
        torch.save(teacher.cpu().state_dict(), folder / TEACHER_FILE)

    return ctx.stage(stage, depends, build)


def load_teacher(ctx: Context, result: StageResult, num_classes: int) -> Teacher:
    teacher = ctx.teacher(num_classes)
    teacher.load_state_dict(torch.load(result.path / TEACHER_FILE, map_location="cpu"))
    return teacher.to(ctx.device)


@torch.no_grad()
def video_similarity(ctx: Context, invariant: Teacher, distinctive: Teacher) -> dict[str, float]:
    """``s`` of every training video (Eq. 5–6), by name: its n consecutive clips from a fixed start, centre crops."""
    seed_epoch(ctx.cfg, 0, 0)
    centre = transforms.test_views(ctx.opts, 1)
    data = ctx.consecutive(lambda clip: centre(clip)[0], pretraining=False)
    scores: dict[str, float] = {}
    for batch in DataLoader(data, batch_size=ctx.cfg.ssl_batch_size, num_workers=ctx.cfg.loader_workers):
        s = similarity(invariant, distinctive, batch["clips_a"].to(ctx.device))
        scores.update((ctx.index.train[i].name, v) for i, v in zip(batch["index"].tolist(), s.tolist()))
    return scores


def finetune_stage(ctx: Context, invariant: StageResult, distinctive: StageResult) -> StageResult:
    """Both teachers fine-tuned on the labeled set, and ``s`` of every video from the pretrained ones (Algorithm 1,
    line 16); the result holds both fine-tuned backbones and the scores."""
    cfg, stage = ctx.cfg, "finetune_teachers"
    depends = {"pretrained": [invariant.key, distinctive.key], "subset_hash": ctx.subset.subset_hash,
               **{k: getattr(cfg, k) for k in FINETUNE_KEYS}}  # fmt: skip

    def build(folder: Path, key: str) -> None:
        num_classes = ctx.index.num_classes
        teachers = {"invariant": load_teacher(ctx, invariant, num_classes), "distinctive": load_teacher(ctx, distinctive, num_classes)}
        scores = video_similarity(ctx, teachers["invariant"], teachers["distinctive"])
        seed_epoch(cfg, 0, 0)
        clip = ClipSpec(cfg.primary_frames, cfg.primary_stride)
        labeled = TrainClips(ctx.subset.labeled, ctx.reader, {"teacher": clip}, {"labeled": transforms.geometric(ctx.opts)})
        backbones = {name: t.backbone for name, t in teachers.items()}
        report = ctx.reporter(stage, key, cfg.finetune_epochs)
        alone = LocalSession(device=str(ctx.device), stage_root=ctx.session.stages.root)  # the test set unsharded

        def on_epoch(metrics: dict[str, Any]) -> None:
            if metrics["epoch"] == cfg.finetune_epochs:  # the teachers' test accuracy, once (Table 2, rows b–c)
                nets = {"primary": methods.Net(backbones["invariant"]), "aux": methods.Net(backbones["distinctive"])}
                test = DataLoader(ctx.test_set(("primary", "aux")), batch_size=max(1, cfg.batch_size), num_workers=cfg.loader_workers)
                accuracy = evaluate(nets, test, alone, ctx.autocast())
                metrics = {**metrics, "top1": accuracy["top1"], "aux_top1": accuracy["aux_top1"]}
            report(metrics)

        weak = transforms.DeviceFinish(ctx.opts, {"teacher_labeled": "weak"})
        finetune(backbones, "teacher_labeled", batches=endless_batches(labeled, cfg.batch_size, cfg, 0, 3, finish=weak, device=ctx.device),
                 device=ctx.device, epochs=cfg.finetune_epochs,
                 steps=epoch_steps(cfg, len(labeled), cfg.batch_size), lr=cfg.teacher_lr, warmup_epochs=cfg.teacher_warmup_epochs,
                 on_epoch=on_epoch, autocast=ctx.autocast())  # fmt: skip
        for name, backbone in backbones.items():
            torch.save(backbone.cpu().state_dict(), folder / f"{name}.pt")
        _write_json(folder / SIMILARITY_FILE, {"by_video": scores, "by_class": class_similarity(ctx.index, scores)})

    return ctx.stage(stage, depends, build)


def class_similarity(index: DatasetIndex, scores: dict[str, float]) -> dict[str, float]:
    """Mean ``s`` of each class's training videos (the paper's Fig. 4: high for repetitive actions)."""
    by_class: dict[int, list[float]] = {}
    for record in index.train:
        if record.name in scores:
            by_class.setdefault(record.label, []).append(scores[record.name])
    return {index.classes[label]: sum(v) / len(v) for label, v in sorted(by_class.items())}


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    tmp.replace(path)


class Student:
    """TimeBalance as the driver runs it (``engine.Trainer``): building it finds, waits for or builds the teachers'
    stages (Algorithm 1, lines 8–21), each once per key; the driver then trains the student (lines 22–25), reported
    as every method's epochs are, with ``stage`` "student".

    Each step is a labeled batch and ``mu`` times as many unlabeled clips, one forward pass of the student over
    both (one batch: ``batchnorm: separate`` does not apply), the fine-tuned teachers' predictions of the same clips
    mixed by each video's ``s``; Adam with the paper's schedule at ``lr``.
    """

    def __init__(self, cfg: TrainConfig, session: Session) -> None:
        self.cfg = cfg
        index = load_index(cfg, progress=session.rank == 0)
        subset = labeled_subset(index.train, cfg.labeled_per_class, cfg.labeled_subset_seed, cfg.labeled_fraction)
        opts = transforms.SpatialOptions(input_size=cfg.input_size, resize_min=cfg.resize_min, resize_max=cfg.resize_max,
                                         randaug_ops=cfg.randaug_ops, randaug_magnitude=cfg.randaug_magnitude, cutout=cfg.cutout)  # fmt: skip
        ctx = Context(cfg, session, index, subset, VideoReader(cache=cfg.cache_decoded, decoder=cfg.video_reader), opts, StageStore(session.stages.root))
        invariant = pretrain_stage(ctx, "invariant")
        distinctive = pretrain_stage(ctx, "distinctive")
        tuned = finetune_stage(ctx, invariant, distinctive)

        num_classes = index.num_classes
        scores = json.loads((tuned.path / SIMILARITY_FILE).read_text())["by_video"]
        clip = ClipSpec(cfg.primary_frames, cfg.primary_stride)
        crop = transforms.geometric(opts)
        self.labeled = TrainClips(subset.labeled, ctx.reader, {"primary": clip}, {"labeled": crop})
        self.unlabeled = TrainClips(subset.unlabeled, ctx.reader, {"primary": clip}, {"clip": crop})
        # A video whose clips could not be scored (unreadable) gets the even mix.
        self.s = {name: torch.tensor([scores.get(r.name, 0.5) for r in data.records], device=session.device)
                  for name, data in (("labeled", self.labeled), ("unlabeled", self.unlabeled))}  # fmt: skip
        self.finish = transforms.DeviceFinish(opts, {"primary_labeled": "weak", "primary_clip": "weak"})
        self.teachers = {}
        for name in ("invariant", "distinctive"):
            backbone = ctx.backbone(num_classes, cfg.primary_frames)
            backbone.load_state_dict(torch.load(tuned.path / f"{name}.pt", map_location="cpu"))
            self.teachers[name] = backbone.to(session.device).eval().requires_grad_(False)

        student = ctx.backbone(num_classes, cfg.primary_frames)
        if cfg.student_init == "distinctive":  # the paper starts from a self-supervised model (TCLR, a distinctive one)
            pretrained = torch.load(distinctive.path / TEACHER_FILE, map_location="cpu")
            student.load_state_dict({k.removeprefix("backbone."): v for k, v in pretrained.items()
                                     if k.startswith("backbone.") and not k.startswith("backbone.fc.")}, strict=False)  # fmt: skip
        self.nets: dict[str, nn.Module] = {"primary": trained_net(cfg, student)}
        self.data = RunData(index, subset, ctx.reader, ctx.test_set(("primary",), session.rank, session.world_size))
        self.steps = epoch_steps(cfg, len(subset.unlabeled), cfg.mu * cfg.batch_size * session.world_size)
        self.row: dict[str, Any] = {"stage": "student"}

    def optimizers(self, nets: dict[str, nn.Module]) -> Optimizers:
        cfg = self.cfg
        return Optimizers.paper(nets, cfg.lr, cfg.weight_decay, round(cfg.warmup_epochs), self.steps, cfg.grad_clip)

    def train_epoch(self, nets: dict[str, nn.Module], optimizers: Optimizers, autocast: contextlib.AbstractContextManager,
                    epoch: int, session: Session) -> Sums:  # fmt: skip
        """One epoch's steps; the distillation is the sums' unlabeled term, ``loss_pl``."""
        cfg, net = self.cfg, nets["primary"]
        net.train()
        shard = session.rank, session.world_size
        finished = {"finish": self.finish, "device": session.device}
        labeled = endless_batches(self.labeled, cfg.batch_size, cfg, epoch, 0, *shard, **finished)
        unlabeled = endless_batches(self.unlabeled, cfg.mu * cfg.batch_size, cfg, epoch, 1, *shard, **finished)
        sums = new_sums()
        for _ in range(self.steps):
            lab, unl = next(labeled), next(unlabeled)
            clips = torch.cat([lab["primary_labeled"], unl["primary_clip"]])
            s = torch.cat([self.s["labeled"][lab["index"]], self.s["unlabeled"][unl["index"]]])
            with autocast:
                logits, _ = net(clips)
                with torch.no_grad():
                    p_i, p_d = (t(clips).float().softmax(dim=-1) for t in self.teachers.values())
            labels = lab["label"]
            logits = logits.float()
            loss, supervised, distilled = student_losses(logits[: len(labels)], labels, logits, p_i, p_d, s, cfg.omega)
            optimizers.zero_grad()
            loss.backward()
            optimizers.step()
            add_step(sums, methods.StepLosses(loss=loss, loss_sup=supervised, loss_pl=distilled), len(clips))
        return sums
