"""Backbones: the paper's exact parameter counts, and the shared surface every method relies on."""

from __future__ import annotations

import pytest
import timm
import torch
from pytorchvideo.models.resnet import create_resnet
from torch import nn

from trainable import models


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet3d_50_has_the_slow_only_r50_parameter_count() -> None:
    model = models.build("resnet3d_50", num_classes=101, frames=8, size=224)
    assert count(model) == 31_841_445
    reference = create_resnet(model_depth=50, model_num_class=101, stem_conv_kernel_size=(1, 7, 7))
    assert count(model) == count(reference)


def test_timesformer_s_is_vit_small_plus_divided_attention() -> None:
    model = models.build("timesformer_s", num_classes=101, frames=8, size=224)
    assert count(model) == 30_587_237
    vit_small = timm.create_model("vit_small_patch16_224", num_classes=101, pretrained=False)
    assert count(vit_small) == 21_704_549
    per_block = 739_968  # temporal LayerNorm + temporal attention (qkv with bias, proj) + temporal_fc
    assert count(model) == count(vit_small) + 12 * per_block + 8 * 384
    block = model.blocks[0]
    temporal = [block.temporal_norm1, block.temporal_attn, block.temporal_fc]
    assert sum(count(m) for m in temporal) == per_block


def test_temporal_fc_starts_at_zero() -> None:
    model = models.build("timesformer_tiny", num_classes=3, frames=4, size=32)
    for block in model.blocks:
        assert torch.count_nonzero(block.temporal_fc.weight) == 0
        assert torch.count_nonzero(block.temporal_fc.bias) == 0


def test_pairing_backbones_exist_and_are_ordered_by_size() -> None:
    sizes = {name: count(models.build(name, 101, 8, 224)) for name in ("resnet3d_18", "resnet3d_50", "timesformer_s", "timesformer_b")}
    assert sizes["resnet3d_18"] < sizes["resnet3d_50"]
    assert sizes["timesformer_s"] < sizes["timesformer_b"]


@pytest.mark.parametrize("name", ["resnet3d_tiny", "timesformer_tiny"])
def test_tiny_backbones_share_the_surface(name: str) -> None:
    model = models.build(name, num_classes=5, frames=8, size=32)
    assert count(model) < 500_000
    clips = torch.randn(3, 3, 8, 32, 32)
    features = model.forward_features(clips)
    assert features.shape == (3, model.num_features)
    logits = model.forward_head(features)
    assert logits.shape == (3, 5)
    assert torch.allclose(model.eval()(clips), model.forward_head(model.forward_features(clips)))


def test_timesformer_uses_the_order_of_frames() -> None:
    """Divided attention plus time embeddings: reversing time changes the output (pure spatial ViT would not)."""
    torch.manual_seed(0)
    model = models.build("timesformer_tiny", num_classes=4, frames=4, size=32).eval()
    for block in model.blocks:  # leave the zero-initialised state so temporal attention contributes
        nn.init.normal_(block.temporal_fc.weight, std=0.1)
    clips = torch.randn(2, 3, 4, 32, 32)
    assert not torch.allclose(model(clips), model(clips.flip(2)), atol=1e-5)


def test_unknown_backbone_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet3d_34'.*resnet3d_50"):
        models.build("resnet3d_34", 10, 8, 224)


def test_only_declared_backbones_can_be_registered() -> None:
    # trainable.catalog.BACKBONES is what the config accepts; a builder under another name would drift from it.
    from trainable.models.registry import register

    with pytest.raises(ValueError, match="'resnet3d_34' is not declared in trainable.catalog.BACKBONES"):
        register("resnet3d_34")(lambda **kwargs: nn.Identity())
