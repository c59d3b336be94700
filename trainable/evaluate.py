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
    # Counts by name (videos, the primary's top-1 and top-5 hits, each other model's top-1 hits), summed over
    # workers as one tensor in this order.
    keys = ["videos", "top1", "top5"] + [f"top1_{name}" for name in names[1:]]
    counts = dict.fromkeys(keys, 0)
    for batch in loader:
        labels = batch["label"]
        counts["videos"] += len(labels)
        for i, name in enumerate(names):
            views = batch[name].to(session.device, non_blocking=True)
            b, v = views.shape[:2]
            with autocast:
                logits, _ = nets[name](views.flatten(0, 1))
            probs = logits.float().softmax(dim=-1).view(b, v, -1).mean(dim=1).cpu()
            top = probs.topk(min(5, probs.shape[1]), dim=1).indices
            hit1 = int((top[:, 0] == labels).sum())
            if i == 0:
                counts["top1"] += hit1
                counts["top5"] += int((top == labels[:, None]).any(dim=1).sum())
            else:
                counts[f"top1_{name}"] += hit1
    summed = session.all_reduce(torch.tensor([counts[k] for k in keys], dtype=torch.float64, device=session.device))
    totals = dict(zip(keys, summed.tolist()))  # NCCL reduces only tensors on the GPU: summed there, read once
    videos = max(totals["videos"], 1.0)
    return {
        "top1": 100 * totals["top1"] / videos,
        "top5": 100 * totals["top5"] / videos,
        "aux_top1": 100 * totals[f"top1_{names[1]}"] / videos if len(names) > 1 else math.nan,
    }
