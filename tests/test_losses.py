"""The losses against plain loop-over-samples transcriptions of the equations of docs/method.md §1."""

from __future__ import annotations

import math

import pytest
import torch

from trainable.losses import (
    contrastive_loss,
    cross_pseudo_label_loss,
    distillation_loss,
    distinctive_pooled_loss,
    distinctive_unpooled_loss,
    invariant_loss,
    symmetric_contrastive_loss,
    teacher_mix,
    temporal_similarity,
)


def reference_pseudo_label_loss(student: torch.Tensor, teacher: torch.Tensor, threshold: float) -> tuple[float, list[bool]]:
    """L_u = (1/B_u) Σ_i 1[max q_i ≥ τ] · CE(argmax q_i, student_i), one clip at a time."""
    total, mask = 0.0, []
    for s, t in zip(student.tolist(), teacher.tolist()):
        z = sum(math.exp(v) for v in t)
        q = [math.exp(v) / z for v in t]
        confident = max(q) >= threshold
        mask.append(confident)
        if confident:
            label = q.index(max(q))
            total += -(s[label] - math.log(sum(math.exp(v) for v in s)))
    return total / len(student), mask


def reference_contrastive_loss(zp: torch.Tensor, za: torch.Tensor, temperature: float) -> float:
    """L_ca(i) = −log h(z_i^Z, z_i^A) / (h(z_i^Z, z_i^A) + Σ_{q∈{Z,A}} Σ_{k≠i} h(z_i^Z, z_k^q)), averaged."""

    def h(u: list[float], v: list[float]) -> float:
        dot = sum(a * b for a, b in zip(u, v))
        cos = dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))
        return math.exp(cos / temperature)

    zp_l, za_l = zp.tolist(), za.tolist()
    n = len(zp_l)
    losses = []
    for i in range(n):
        positive = h(zp_l[i], za_l[i])
        negatives = sum(h(zp_l[i], other[k]) for other in (zp_l, za_l) for k in range(n) if k != i)
        losses.append(-math.log(positive / (positive + negatives)))
    return sum(losses) / n


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.6, 0.95])
def test_pseudo_label_loss_matches_reference(seed: int, threshold: float) -> None:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(7, 5, generator=g, dtype=torch.float64)
    teacher = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2.5
    loss, mask = cross_pseudo_label_loss(student, teacher, threshold)
    expected, expected_mask = reference_pseudo_label_loss(student, teacher, threshold)
    assert mask.dtype == torch.bool
    assert mask.tolist() == expected_mask
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_pseudo_label_loss_nothing_confident_is_zero_with_zero_gradient() -> None:
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.zeros(4, 3)  # uniform: max prob 1/3
    loss, mask = cross_pseudo_label_loss(student, teacher, 0.5)
    assert not mask.any()
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(student.grad) == 0


def test_pseudo_label_loss_all_confident_is_plain_cross_entropy_on_hard_labels() -> None:
    student = torch.randn(6, 4, dtype=torch.float64)
    teacher = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 0, 1]), 4).double() * 20
    loss, mask = cross_pseudo_label_loss(student, teacher, 0.8)
    assert mask.all()
    expected = torch.nn.functional.cross_entropy(student, torch.tensor([0, 1, 2, 3, 0, 1]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_pseudo_label_loss_is_averaged_over_the_whole_batch() -> None:
    """Two confident clips of four: the sum of their CE divided by 4, not by 2."""
    student = torch.zeros(4, 2, dtype=torch.float64)  # CE of any label = log 2
    teacher = torch.tensor([[9.0, 0.0], [0.0, 9.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    loss, mask = cross_pseudo_label_loss(student, teacher, 0.9)
    assert mask.tolist() == [True, True, False, False]
    assert loss.item() == pytest.approx(2 * math.log(2) / 4)


def test_pseudo_label_loss_stops_gradient_at_the_teacher() -> None:
    student = torch.randn(5, 3, requires_grad=True)
    teacher = (torch.randn(5, 3) * 5).requires_grad_()
    loss, _ = cross_pseudo_label_loss(student, teacher, 0.0)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_contrastive_loss_matches_reference(seed: int, n: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(seed)
    zp = torch.randn(n, 6, generator=g, dtype=torch.float64)
    za = torch.randn(n, 6, generator=g, dtype=torch.float64)
    loss = contrastive_loss(zp, za, temperature)
    assert loss.item() == pytest.approx(reference_contrastive_loss(zp, za, temperature), rel=1e-5)


def test_contrastive_loss_anchors_on_the_primary() -> None:
    """The paper's loss is not symmetric: swapping the models changes it; the symmetric option averages both."""
    g = torch.Generator().manual_seed(0)
    zp, za = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    forward, backward = contrastive_loss(zp, za, 0.5), contrastive_loss(za, zp, 0.5)
    assert forward.item() != pytest.approx(backward.item())
    assert symmetric_contrastive_loss(zp, za, 0.5).item() == pytest.approx((forward + backward).item() / 2)


def test_contrastive_loss_is_low_when_pairs_align_and_others_differ() -> None:
    z = torch.eye(4, dtype=torch.float64)
    aligned = contrastive_loss(z, z, 0.1)
    shuffled = contrastive_loss(z, z.roll(1, dims=0), 0.1)
    assert aligned.item() < 0.01 < shuffled.item()


def test_contrastive_loss_of_one_clip_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 2 clips"):
        contrastive_loss(torch.randn(1, 8), torch.randn(1, 8), 0.5)


@pytest.mark.parametrize("symmetric", [False, True])
def test_global_negatives_split_a_batch_into_parts_whose_mean_is_the_whole_loss(symmetric: bool) -> None:
    """Anchors of each part against the keys of the whole (what a worker computes) average to the whole's loss."""
    from trainable.losses import GlobalBatch

    loss = symmetric_contrastive_loss if symmetric else contrastive_loss
    g = torch.Generator().manual_seed(3)
    zp, za = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    everyone = GlobalBatch(zp, za, 0)
    parts = [loss(zp[i : i + 2], za[i : i + 2], 0.5, everyone._replace(offset=i)) for i in (0, 2, 4)]
    assert (sum(parts) / 3).item() == pytest.approx(loss(zp, za, 0.5).item(), rel=1e-6)  # float32 inside
    assert parts[0].item() != pytest.approx(loss(zp[:2], za[:2], 0.5).item())  # local negatives differ


# TimeBalance: hand-computed values on vectors whose cosines are 0 or 1, and loop-over-terms transcriptions.
LN2_MINUS_1 = math.log(2.0) - 1.0


def _h(u: list[float], v: list[float], temperature: float) -> float:
    cos = sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))
    return math.exp(cos / temperature)


def test_timebalance_losses_on_hand_computed_cases() -> None:
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    # two videos whose two clips are equal: positive h = e, negatives the other video's two clips, h = 1 each
    assert invariant_loss(torch.tensor([[e0, e0], [e1, e1]]), 1.0).item() == pytest.approx(LN2_MINUS_1)
    # one video of two orthogonal clips, augmented copies equal: positive e, negatives 1 + 1
    z = torch.tensor([[e0, e1]])
    assert distinctive_pooled_loss(z, z.clone(), 1.0).item() == pytest.approx(LN2_MINUS_1)
    # aligned slice e, the other 1: −log(e / (e + 1)) both ways
    assert distinctive_unpooled_loss(z, z.clone(), 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    # s: invariant teacher sees the same clip twice (cos 1), distinctive two orthogonal ones (cos 0): (1+1+0+0)/4
    assert temporal_similarity(torch.tensor([[e0, e0]]), z).tolist() == pytest.approx([0.5])
    assert temporal_similarity(torch.tensor([[e0, [-1.0, 0.0]]]), torch.tensor([[e0, [-1.0, 0.0]]])).tolist() == [0.0]  # clamped
    assert teacher_mix(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0.25])).tolist() == [[0.25, 0.75]]
    # student uniform over 2 classes, teacher certain: 0.5² + 0.5²
    assert distillation_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(3))
def test_timebalance_contrastive_losses_match_loops(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    videos, clips, temperature = 3, 4, 0.1
    z, za = torch.randn(videos, clips, 6, generator=g), torch.randn(videos, clips, 6, generator=g)
    zl, zal = z.tolist(), za.tolist()
    invariant = [
        -math.log(_h(zl[i][t1], zl[i][t2], temperature) / sum(
            _h(zl[i][t1], zl[j][t1], temperature) + _h(zl[i][t1], zl[j][t2], temperature) for j in range(videos) if j != i))
        for i in range(videos) for t1 in range(clips) for t2 in range(clips) if t1 != t2
    ]  # fmt: skip
    assert invariant_loss(z, temperature).item() == pytest.approx(sum(invariant) / len(invariant), rel=1e-4)
    pooled = [
        -math.log(_h(zl[i][t1], zal[i][t1], temperature) / sum(
            _h(zl[i][t1], zl[i][t2], temperature) + _h(zl[i][t1], zal[i][t2], temperature) for t2 in range(clips) if t2 != t1))
        for i in range(videos) for t1 in range(clips)
    ]  # fmt: skip
    assert distinctive_pooled_loss(z, za, temperature).item() == pytest.approx(sum(pooled) / len(pooled), rel=1e-4)
    unpooled = [
        -math.log(_h(a[i][t], b[i][t], temperature) / sum(_h(a[i][t], b[i][u], temperature) for u in range(clips)))
        for a, b in ((zl, zal), (zal, zl)) for i in range(videos) for t in range(clips)
    ]  # fmt: skip
    assert distinctive_unpooled_loss(z, za, temperature).item() == pytest.approx(sum(unpooled) / len(unpooled), rel=1e-4)
    # s at T = 1: log h is the cosine
    expected = [min(1.0, max(0.0, sum(math.log(_h(x[i][t1], x[i][t2], 1.0)) for x in (zl, zal) for t1 in range(clips)
                                      for t2 in range(clips) if t1 != t2) / (2 * clips * (clips - 1)))) for i in range(videos)]  # fmt: skip
    assert temporal_similarity(z, za).tolist() == pytest.approx(expected, abs=1e-5)


def test_timebalance_losses_refuse_what_has_no_negatives() -> None:
    with pytest.raises(ValueError, match="2\\+ videos"):
        invariant_loss(torch.randn(1, 4, 3), 0.1)
    with pytest.raises(ValueError, match="2\\+ clips"):
        distinctive_pooled_loss(torch.randn(2, 1, 3), torch.randn(2, 1, 3), 0.1)


def test_distillation_teaches_only_the_student() -> None:
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    distillation_loss(student, teacher.softmax(-1)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None
