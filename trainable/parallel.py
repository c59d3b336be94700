"""Statistics and negatives across data-parallel workers: what lets B_l = 1 per GPU work (docs/method.md §1).

With one labeled clip per worker, plain batch norm normalises that clip by its own statistics, and the
contrastive loss sees only the worker's own few clips as negatives. The lineage the paper builds on
synchronises batch norm across GPUs and gathers negatives from all of them. Both are written here with
``torch.distributed`` collectives that carry gradients (torch's ``SyncBatchNorm`` refuses CPU tensors,
and its gather's backward needs all-to-all, which gloo lacks), so the same code runs on CPU workers
with gloo and on GPU workers with NCCL. With one process, or none initialised, both are the local op.

Gradients are exact: each worker's loss is a function of every worker's inputs, and the backward pass
all-reduces what flows into the shared statistics or the gathered rows, so after DDP averages the
parameter gradients they equal those of one process holding the concatenated batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def _world() -> tuple[int, int]:
    """(rank, world size), or (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _SumAcrossWorkers(torch.autograd.Function):
    """All-reduce (sum) whose backward is the same all-reduce: every worker's loss depends on the sum."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return _summed(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _summed(grad)


def _summed(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` summed over workers (the input untouched, as autograd needs)."""
    out = tensor.contiguous().clone()
    dist.all_reduce(out)
    return out


class _GatherRows(torch.autograd.Function):
    """Concatenate every worker's rows; backward sums the gradient of the whole over workers, keeps own rows."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        rank, world = _world()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows, ctx.rank = tensor.shape[0], rank
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _summed(grad)[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every worker's ``tensor`` stacked in rank order, and where this worker's rows start.

    Workers must pass the same number of rows (the loop's batches are fixed-size). Gradients reach the
    rows of every worker, not only the local ones.
    """
    rank, world = _world()
    if world == 1:
        return tensor, 0
    return _GatherRows.apply(tensor), rank * tensor.shape[0]


class CrossWorkerBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the batch of every worker together.

    Eval mode, and training in one process, are plain batch norm. Statistics are computed in float32
    whatever the autocast precision, as batch norm itself does.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _, world = _world()
        if not self.training or world == 1:
            return super().forward(input)
        self._check_input_dim(input)
        x = input.float()
        dims = [d for d in range(x.dim()) if d != 1]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        totals = _SumAcrossWorkers.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        channels = x.shape[1]
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels : 2 * channels] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * n / (n - 1).clamp_min(1.0)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every batch-norm layer of ``module`` by a ``CrossWorkerBatchNorm`` with the same state."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CrossWorkerBatchNorm):
        synced = CrossWorkerBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        synced.load_state_dict(module.state_dict())
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        converted = convert_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
