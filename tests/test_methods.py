"""How a method's step passes the views through its models: batch-norm batches and the projected views."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainable import methods, models


def nets_for(method: methods.Method, contrastive: bool) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    out = {}
    for role in method.models:
        backbone = models.build("resnet3d_tiny", num_classes=3, frames=4, size=32)
        head = models.ProjectionHead(backbone.num_features, out_features=8) if contrastive else None
        out[role] = methods.Net(backbone, head).train()
    return out


def views(labeled: int, unlabeled: int, method: methods.Method, shift: float = 0.0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(1)
    lab = {f"{m}_labeled": torch.randn(labeled, 3, 4, 32, 32, generator=g) for m in method.models}
    unl = {
        f"{m}_{v}": torch.randn(unlabeled, 3, 4, 32, 32, generator=g) * 3 + shift
        for m in method.models
        for v in ("weak", "strong")
    }
    return lab, unl


@pytest.mark.parametrize("joint", [False, True])
def test_labeled_clips_get_batch_statistics_of_their_own_unless_joint(joint: bool) -> None:
    """Split: the labeled logits do not depend on the unlabeled clips; joint: they do (one batch-norm batch)."""
    method = methods.get("fixmatch")
    nets = nets_for(method, contrastive=False)
    lab, unl = views(2, 4, method)
    _, unl_shifted = views(2, 4, method, shift=5.0)
    with torch.no_grad():
        a, _ = method.forward(nets, lab, unl, joint_batchnorm=joint)
        b, _ = method.forward(nets, lab, unl_shifted, joint_batchnorm=joint)
    assert {k: v.shape[0] for k, v in a["primary"].items()} == {"labeled": 2, "weak": 4, "strong": 4}
    assert torch.allclose(a["primary"]["labeled"], b["primary"]["labeled"]) is not joint


@pytest.mark.parametrize("joint", [False, True])
def test_projections_are_of_the_weak_views_and_agree_between_modes_in_eval(joint: bool) -> None:
    """Only the weak views are projected; in eval mode (running statistics) both modes compute the same."""
    method = methods.get("actnetformer")
    nets = nets_for(method, contrastive=True)
    lab, unl = views(2, 5, method)
    logits, projections = method.forward(nets, lab, unl, joint_batchnorm=joint)
    assert set(projections) == {"primary", "aux"} and all(p.shape == (5, 8) for p in projections.values())
    for net in nets.values():
        net.eval()
    with torch.no_grad():
        split, p_split = method.forward(nets, lab, unl, joint_batchnorm=False)
        one, p_one = method.forward(nets, lab, unl, joint_batchnorm=True)
    expected = nets["aux"](unl["aux_weak"], project=slice(None))[1]
    assert torch.allclose(p_split["aux"], expected, atol=1e-5) and torch.allclose(p_one["aux"], expected, atol=1e-5)
    assert all(torch.allclose(split["primary"][v], one["primary"][v], atol=1e-5) for v in ("labeled", "weak", "strong"))


def test_supervised_passes_only_labeled_clips() -> None:
    method = methods.get("supervised")
    nets = nets_for(method, contrastive=False)
    lab, _ = views(3, 0, method)
    logits, projections = method.forward(nets, lab, None)
    assert list(logits["primary"]) == ["labeled"] and logits["primary"]["labeled"].shape == (3, 3) and not projections
