"""The method's equations (SPEC §1), each a pure function of tensors: no models, no Ray, no config.

Losses are computed in float32 whatever precision the forward pass ran in.
"""

from __future__ import annotations

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


def contrastive_loss(z_primary: torch.Tensor, z_auxiliary: torch.Tensor, temperature: float) -> torch.Tensor:
    """``L_ca`` (Eq. 6), anchored on the primary and averaged over the batch.

    For clip ``i`` the positive is the auxiliary's embedding of the same clip; the negatives are every other
    clip's embedding from both models. With ``h = exp(cos / T)`` the loss is the cross entropy of picking the
    positive among ``[h(z_i^Z, z_k^A) for all k] + [h(z_i^Z, z_k^Z) for k != i]``.

    A batch of one clip has no negatives and the loss would be a constant 0: that is an error, not a value.
    """
    n = z_primary.shape[0]
    if n < 2:
        raise ValueError(f"contrastive_loss needs at least 2 clips (negatives come from the others), got {n}")
    zp = F.normalize(z_primary.float(), dim=-1)
    za = F.normalize(z_auxiliary.float(), dim=-1)
    cross = zp @ za.T / temperature
    within = (zp @ zp.T / temperature).masked_fill(torch.eye(n, dtype=torch.bool, device=zp.device), float("-inf"))
    targets = torch.arange(n, device=zp.device)
    return F.cross_entropy(torch.cat([cross, within], dim=1), targets)


def symmetric_contrastive_loss(z_primary: torch.Tensor, z_auxiliary: torch.Tensor, temperature: float) -> torch.Tensor:
    """The option of anchoring on both models: the mean of ``L_ca`` anchored on each."""
    return 0.5 * (contrastive_loss(z_primary, z_auxiliary, temperature) + contrastive_loss(z_auxiliary, z_primary, temperature))
