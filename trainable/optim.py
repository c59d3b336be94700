"""Every optimizer and learning-rate schedule of the project, built here: the stepped methods', TimeBalance's
teachers' and its student's.

Two schedules exist because the papers prescribe two: the cosine decay after a linear warm-up that ActNetFormer
and its lineage train with, and TimeBalance's warm-up then halving on a plateau of the epoch's loss
(docs/method.md §2). Both sit behind one ``Optimizers`` so the epoch driver steps, checkpoints and restores
them alike.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import nn

from trainable.config import TrainConfig


def cosine_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


class Schedule(Protocol):
    """A learning-rate schedule as the driver uses it: told of every step and of every epoch's mean loss."""

    def after_step(self) -> None: ...

    def after_epoch(self, loss: float) -> None: ...

    @property
    def current(self) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CosineSchedule:
    """``cosine_factor`` of the optimizer's learning rate, per step (the stepped methods')."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> None:
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, warmup_steps, total_steps))

    def after_step(self) -> None:
        self.scheduler.step()

    def after_epoch(self, loss: float) -> None:
        """The cosine schedule depends on the step alone."""

    @property
    def current(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


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


def make_optimizer(kind: str, net: nn.Module, lr: float, weight_decay: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """``sgd`` or ``adamw`` (the config's ``optimizer``), or ``adam`` (TimeBalance's, fixed by its paper)."""
    if kind == "sgd":
        # fused (CPU and CUDA): one pass over the parameters per step, not one per operation of the update
        # as foreach, the default, makes (SGD on the paper's two models, CPU: 55 ms instead of 250 ms).
        # SGD's update is bitwise the same, AdamW's within a rounding.
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
    if kind == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    if kind == "adam":
        return torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; allowed: sgd, adamw, adam")


class Optimizers:
    """One optimizer, learning-rate schedule and gradient clip per model.

    Per model because a CNN and a transformer trained from scratch may want different optimizers (the
    config's ``aux_optimizer``, ``aux_lr``, ``aux_weight_decay``), and because clipping the norm of both
    models' gradients together would let one model's large gradient shrink the other's step.
    """

    def __init__(self, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 schedules: dict[str, Schedule], clip: float | None) -> None:  # fmt: skip
        self.nets, self.optimizers, self.schedules, self.clip = nets, optimizers, schedules, clip

    @classmethod
    def cosine(cls, cfg: TrainConfig, nets: dict[str, nn.Module], steps_per_epoch: int) -> "Optimizers":
        """The stepped methods': each model's ``cfg.optimizer_of`` with the cosine schedule over ``cfg.epochs``."""
        warmup, total = round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch
        optimizers, schedules = {}, {}
        for role, net in nets.items():
            kind, lr, weight_decay = cfg.optimizer_of(role)
            optimizers[role] = make_optimizer(kind, net, lr, weight_decay, cfg.momentum)
            schedules[role] = CosineSchedule(optimizers[role], warmup, total)
        return cls(nets, optimizers, schedules, cfg.grad_clip)

    @classmethod
    def paper(cls, nets: dict[str, nn.Module], lr: float, weight_decay: float, warmup_epochs: int, steps_per_epoch: int,
              clip: float | None) -> "Optimizers":  # fmt: skip
        """TimeBalance's (teachers and student): Adam at ``lr`` with ``PaperSchedule``."""
        optimizers = {role: make_optimizer("adam", net, lr, weight_decay) for role, net in nets.items()}
        schedules: dict[str, Schedule] = {role: PaperSchedule(o, lr, warmup_epochs, steps_per_epoch) for role, o in optimizers.items()}
        return cls(nets, optimizers, schedules, clip)

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Clip each model's gradient, step its optimizer, advance its schedule."""
        for role, optimizer in self.optimizers.items():
            if self.clip is not None:
                nn.utils.clip_grad_norm_(self.nets[role].parameters(), self.clip)
            optimizer.step()
            self.schedules[role].after_step()

    def after_epoch(self, loss: float) -> None:
        """The epoch's mean loss, for schedules that follow it (TimeBalance's plateau)."""
        for schedule in self.schedules.values():
            schedule.after_epoch(loss)

    def lr(self) -> float:
        """The first model's (the primary's) current learning rate: what the epochs table records."""
        return next(iter(self.schedules.values())).current

    def state_dict(self) -> dict[str, Any]:
        return {
            role: {"optimizer": optimizer.state_dict(), "scheduler": self.schedules[role].state_dict()}
            for role, optimizer in self.optimizers.items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for role, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[role]["optimizer"])
            self.schedules[role].load_state_dict(state[role]["scheduler"])
