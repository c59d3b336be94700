"""Multi-view test (docs/method.md §1.2): softmax averaged over clips × crops; top-1/top-5 of the primary.

The auxiliary's top-1 is measured the same way, for the record only: the paper uses the primary alone.
Videos are sharded over workers and the counts summed, so every test video counts exactly once.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from trainable.session import Session


@torch.no_grad()
def evaluate(nets: dict[str, nn.Module], loader: DataLoader, session: Session, autocast: contextlib.AbstractContextManager) -> dict[str, float]:
    """Return ``top1``, ``top5`` (primary) and ``aux_top1`` (NaN without an auxiliary), in percent."""
    for net in nets.values():
        net.eval()
    names = list(nets)
    # counts: videos, primary top-1 hits, primary top-5 hits, then top-1 hits of every other model
    counts = torch.zeros(3 + len(names) - 1, dtype=torch.float64)
    for batch in loader:
        labels = batch["label"]
        counts[0] += len(labels)
        for i, name in enumerate(names):
            views = batch[name].to(session.device, non_blocking=True)
            b, v = views.shape[:2]
            with autocast:
                logits, _ = nets[name](views.flatten(0, 1))
            probs = logits.float().softmax(dim=-1).view(b, v, -1).mean(dim=1).cpu()
            top = probs.topk(min(5, probs.shape[1]), dim=1).indices
            hit1 = (top[:, 0] == labels).sum()
            if i == 0:
                counts[1] += hit1
                counts[2] += (top == labels[:, None]).any(dim=1).sum()
            else:
                counts[2 + i] += hit1
    counts = session.all_reduce(counts.to(session.device))  # NCCL reduces only tensors on the GPU
    total = max(counts[0].item(), 1.0)
    return {
        "top1": 100 * counts[1].item() / total,
        "top5": 100 * counts[2].item() / total,
        "aux_top1": 100 * counts[3].item() / total if len(names) > 1 else math.nan,
    }
