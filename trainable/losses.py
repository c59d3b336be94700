"""The method's equations (SPEC §1), each a pure function of tensors: no models, no Ray, no config.

Losses are computed in float32 whatever precision the forward pass ran in.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_s = CE(y, model(G_n(x)))``, averaged over the labeled batch."""
    return F.cross_entropy(logits.float(), labels)


def cross_pseudo_label_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``L_u``: the teacher's confident hard labels teach the student (Eq. 4–5; Eq. 1 when both are one model).

    The teacher side is stop-gradient. The sum over confident clips is divided by the whole unlabeled
    batch, not by the number of confident ones, so the loss grows as more clips pass the threshold.
    Returns the loss and the boolean mask of clips whose teacher confidence is ``>= threshold``.
    """
    with torch.no_grad():
        confidence, pseudo = teacher_logits.detach().float().softmax(dim=-1).max(dim=-1)
        mask = confidence >= threshold
    per_clip = F.cross_entropy(student_logits.float(), pseudo, reduction="none")
    return (per_clip * mask).sum() / student_logits.shape[0], mask


class GlobalBatch(NamedTuple):
    """The projections of every worker's clips; this worker's are rows ``offset`` to ``offset + n``."""

    primary: torch.Tensor
    auxiliary: torch.Tensor
    offset: int

    def swapped(self) -> "GlobalBatch":
        return GlobalBatch(self.auxiliary, self.primary, self.offset)


def contrastive_loss(
    z_primary: torch.Tensor, z_auxiliary: torch.Tensor, temperature: float, everyone: GlobalBatch | None = None
) -> torch.Tensor:
    """``L_ca`` (Eq. 6), anchored on the primary and averaged over the batch.

    For clip ``i`` the positive is the auxiliary's embedding of the same clip; the negatives are every other
    clip's embedding from both models. With ``h = exp(cos / T)`` the loss is the cross entropy of picking the
    positive among ``[h(z_i^Z, z_k^A) for all k] + [h(z_i^Z, z_k^Z) for k != i]``.

    ``everyone`` widens the clips ``k`` to every worker's batch (global negatives); the anchors stay this
    worker's clips. Averaged over workers, the loss then equals this function on the concatenated batch.

    A batch of one clip has no negatives and the loss would be a constant 0: that is an error, not a value.
    """
    everyone = everyone or GlobalBatch(z_primary, z_auxiliary, 0)
    n, total = z_primary.shape[0], everyone.primary.shape[0]
    if total < 2:
        raise ValueError(f"contrastive_loss needs at least 2 clips (negatives come from the others), got {total}")
    zp = F.normalize(z_primary.float(), dim=-1)
    keys_p = F.normalize(everyone.primary.float(), dim=-1)
    keys_a = F.normalize(everyone.auxiliary.float(), dim=-1)
    targets = torch.arange(everyone.offset, everyone.offset + n, device=zp.device)
    cross = zp @ keys_a.T / temperature
    itself = torch.zeros(n, total, dtype=torch.bool, device=zp.device)
    itself[torch.arange(n, device=zp.device), targets] = True
    within = (zp @ keys_p.T / temperature).masked_fill(itself, float("-inf"))
    return F.cross_entropy(torch.cat([cross, within], dim=1), targets)


def symmetric_contrastive_loss(
    z_primary: torch.Tensor, z_auxiliary: torch.Tensor, temperature: float, everyone: GlobalBatch | None = None
) -> torch.Tensor:
    """The option of anchoring on both models: the mean of ``L_ca`` anchored on each."""
    swapped = everyone.swapped() if everyone is not None else None
    return 0.5 * (
        contrastive_loss(z_primary, z_auxiliary, temperature, everyone)
        + contrastive_loss(z_auxiliary, z_primary, temperature, swapped)
    )
