"""The method's equations (docs/method.md §1), each a pure function of tensors: no models, no Ray, no config.

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


# TimeBalance (docs/method.md §2). Clip projections come as (videos, clips, dim): clip ``t`` of
# video ``i`` is ``z[i, t]``; ``h(u, v) = exp(cos(u, v) / T)``. Each loss is averaged over the terms the paper sums
# (videos, clips, clip pairs), so its scale does not move with the batch size or the number of clips.


def _cosines(a: torch.Tensor, b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``cos(a[i, t], b[j, u]) / T`` for every pair, shaped (videos, clips, videos, clips)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    return torch.einsum("itd,jud->itju", a, b) / temperature


def invariant_loss(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """``L_I`` (Eq. 1): two clips of one video agree; clips of the other videos in the batch are the negatives.

    As the paper writes it, for each ordered pair ``t1 != t2`` of video ``i``: ``-log h(z_t1^i, z_t2^i) /
    Σ_{j≠i} [h(z_t1^i, z_t1^j) + h(z_t1^i, z_t2^j)]``; the positive is not in the denominator.
    """
    videos, clips = z.shape[:2]
    if videos < 2 or clips < 2:
        raise ValueError(f"invariant_loss needs 2+ videos (negatives) of 2+ clips (positives), got {videos} x {clips}")
    sims = _cosines(z, z, temperature)
    other = ~torch.eye(videos, dtype=torch.bool, device=z.device)  # [i, j]: j != i
    terms = []
    for t1 in range(clips):
        for t2 in range(clips):
            if t1 == t2:
                continue
            negatives = torch.cat([sims[:, t1, :, t1], sims[:, t1, :, t2]], dim=1)  # (i, 2 * videos)
            negatives = negatives.masked_fill(~other.repeat(1, 2), float("-inf"))
            positive = sims[torch.arange(videos), t1, torch.arange(videos), t2]
            terms.append(torch.logsumexp(negatives, dim=1) - positive)
    return torch.stack(terms).mean()


def distinctive_pooled_loss(z: torch.Tensor, z_augmented: torch.Tensor, temperature: float) -> torch.Tensor:
    """``L_D1`` (Eq. 3): a clip agrees with its own augmented copy; the video's clips at other times, both
    copies, are the negatives: ``-log h(z_t1, z~_t1) / Σ_{t2≠t1} [h(z_t1, z_t2) + h(z_t1, z~_t2)]`` per video."""
    videos, clips = z.shape[:2]
    if clips < 2:
        raise ValueError(f"distinctive_pooled_loss needs 2+ clips per video (the negatives), got {clips}")
    index = torch.arange(videos, device=z.device)
    own = _cosines(z, z, temperature)[index, :, index, :]  # (i, t1, t2): within each video
    augmented = _cosines(z, z_augmented, temperature)[index, :, index, :]
    other = ~torch.eye(clips, dtype=torch.bool, device=z.device)
    negatives = torch.cat([own, augmented], dim=2).masked_fill(~other.repeat(1, 2), float("-inf"))
    positive = augmented.diagonal(dim1=1, dim2=2)  # (i, t1)
    return (torch.logsumexp(negatives, dim=2) - positive).mean()


def distinctive_unpooled_loss(local: torch.Tensor, slices: torch.Tensor, temperature: float) -> torch.Tensor:
    """``L_D2`` (Supp. D, TCLR's local-global loss): the pooled feature of a short clip at time ``t`` agrees with
    slice ``t`` of a long clip's unpooled features, against the video's other slices, and the other way round.

    ``local``: (videos, n, dim), the short clips' projections; ``slices``: (videos, n, dim), the long clip's
    time axis cut into ``n`` aligned parts, each pooled and projected. TCLR's InfoNCE: the positive is in the
    denominator; the mean of both directions.
    """
    clips = local.shape[1]
    if clips < 2:
        raise ValueError(f"distinctive_unpooled_loss needs 2+ clips per video (the negatives), got {clips}")
    index = torch.arange(local.shape[0], device=local.device)
    logits = _cosines(local, slices, temperature)[index, :, index, :]  # (i, t local, u slice)
    target = torch.arange(clips, device=local.device).expand(local.shape[0], clips)
    forward = F.cross_entropy(logits.flatten(0, 1), target.flatten())
    backward = F.cross_entropy(logits.transpose(1, 2).flatten(0, 1), target.flatten())
    return 0.5 * (forward + backward)


def temporal_similarity(invariant: torch.Tensor, distinctive: torch.Tensor) -> torch.Tensor:
    """``s`` per video (Eq. 5–6): the mean off-diagonal cosine similarity between a video's clips under both
    teachers, ``Σ_{t1≠t2} (C_I + C_D) / 2n(n−1)``. Clamped to [0, 1], the range Eq. 7 mixes with (features
    after a ReLU are never opposed; projections can be)."""
    clips = invariant.shape[1]
    if clips < 2:
        raise ValueError(f"temporal_similarity needs 2+ clips per video, got {clips}")
    index = torch.arange(invariant.shape[0], device=invariant.device)
    total = _cosines(invariant, invariant)[index, :, index, :] + _cosines(distinctive, distinctive)[index, :, index, :]
    off = ~torch.eye(clips, dtype=torch.bool, device=invariant.device)
    return (total * off).sum(dim=(1, 2)).div(2 * clips * (clips - 1)).clamp(0.0, 1.0)


def teacher_mix(p_invariant: torch.Tensor, p_distinctive: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``p_T = s · p_I + (1 − s) · p_D`` (Eq. 7): the invariant teacher counts more for a video whose clips look
    alike (repetitive actions), the distinctive one for a video of changing sub-actions."""
    s = s.float().unsqueeze(-1)
    return s * p_invariant.float() + (1.0 - s) * p_distinctive.float()


def distillation_loss(student_logits: torch.Tensor, p_teacher: torch.Tensor) -> torch.Tensor:
    """``L_unsup = ‖p_T − p_S‖²`` (Eq. 8), summed over classes and averaged over videos; the teacher side is
    stop-gradient."""
    p_student = student_logits.float().softmax(dim=-1)
    return (p_teacher.detach().float() - p_student).pow(2).sum(dim=-1).mean()
