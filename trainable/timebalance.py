"""TimeBalance (CVPR 2023; ../shared/papers/timebalance.md): the teachers' self-supervised objectives.

A teacher is a 3D-ResNet and the paper's projection head (``models.TeacherProjection``). It learns from
``ConsecutiveClips`` batches: ``n`` consecutive clips of each video in two augmentations and one long clip over
the same stretch. The temporally-invariant teacher pulls a video's clips together (``L_I``, Eq. 1); the
temporally-distinctive one tells them apart, on pooled features (``L_D1``, Eq. 3) and on the long clip's
unpooled time steps (``L_D2``, Supp. D).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn

from trainable import losses
from trainable.data import transforms
from trainable.models.resnet3d import ResNet3d
from trainable.session import to_device

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
        """``(B, n, C, T, H, W)`` clips to ``(B, n, d)`` projections."""
        videos, n = clips.shape[:2]
        return self.projection(self.backbone.forward_features(clips.flatten(0, 1))).view(videos, n, -1)

    def project_slices(self, long: torch.Tensor, n: int) -> torch.Tensor:
        """The long clip's time axis cut into ``n`` equal parts, each pooled and projected: ``(B, n, d)``."""
        steps = self.backbone.forward_temporal(long)  # (B, T, C)
        videos, frames, channels = steps.shape
        if frames % n:
            raise ValueError(f"the long clip's {frames} time steps do not split into {n} equal parts")
        return self.projection(steps.view(videos, n, frames // n, channels).mean(dim=2).flatten(0, 1)).view(videos, n, -1)


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


class PaperSchedule:
    """TimeBalance's learning rate (its Supp. B.2): linear warm-up over ``warmup_epochs``, then halved whenever
    the epoch's loss stops improving (``ReduceLROnPlateau``, factor 0.5). Adam at ``lr`` (1e-3 in the paper)."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, warmup_epochs: int, steps_per_epoch: int, patience: int = 5) -> None:
        self.optimizer, self.lr = optimizer, lr
        self.warmup_steps = warmup_epochs * steps_per_epoch
        self.step_count = 0
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=patience)
        self._set(self._warm(0))

    def _warm(self, step: int) -> float:
        return self.lr * min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else self.lr

    def _set(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def after_step(self) -> None:
        self.step_count += 1
        if self.step_count < self.warmup_steps:
            self._set(self._warm(self.step_count))
        elif self.step_count == self.warmup_steps:
            self._set(self.lr)

    def after_epoch(self, loss: float) -> None:
        if self.step_count >= self.warmup_steps:  # the plateau counts only after the warm-up
            self.plateau.step(loss)

    @property
    def current(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "plateau": self.plateau.state_dict(), "lr": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = state["step_count"]
        self.plateau.load_state_dict(state["plateau"])
        self._set(state["lr"])


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
) -> None:
    """One teacher stage: Adam with the paper's schedule over ``epochs`` of ``steps`` batches, each batch moved to
    ``device`` and scored by ``step_loss``; ``on_epoch`` is told each epoch's mean loss and learning rate."""
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = PaperSchedule(optimizer, lr, warmup_epochs, steps)
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device, read once an epoch
        for _ in range(steps):
            loss = step_loss(to_device(next(batches), device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.after_step()
            total += loss.detach()
        mean = total.item() / steps
        schedule.after_epoch(mean)
        on_epoch({"epoch": epoch, "loss": mean, "lr": schedule.current, "epoch_time_s": time.perf_counter() - started})


def pretrain(objective: Objective, teacher: Teacher, device_finish: transforms.DeviceFinish, temperature: float, **stage: Any) -> None:
    """Self-supervised pretraining of one teacher (Algorithm 1, lines 8–15) on ConsecutiveClips batches;
    ``stage``: ``train_stage``'s other arguments."""
    train_stage(teacher, lambda batch: pretrain_loss(objective, teacher, finish(batch, device_finish), temperature), **stage)


def finetune(backbone: ResNet3d, device_finish: transforms.DeviceFinish, view: str, **stage: Any) -> None:
    """A pretrained teacher's backbone and classifier trained on the labeled clips with cross entropy (Algorithm 1,
    lines 17–21); ``view`` names the batch's clips (a ``TrainClips`` entry); ``stage``: ``train_stage``'s arguments."""

    def step_loss(batch: dict[str, Any]) -> torch.Tensor:
        return losses.supervised_loss(backbone(device_finish.weak(batch[view])), batch["label"])

    train_stage(backbone, step_loss, **stage)


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
