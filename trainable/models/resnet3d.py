"""3D ResNets assembled from pytorchvideo's stem and stage builders.

One class, ``ResNet3d``, covers the paper's slow-only 3D-ResNet50 (bottleneck blocks), the 3D-ResNet18 of
the pairing ablation (basic blocks, ``create_basic_block``: pytorchvideo ships no depth 18) and the tiny CPU
variants (same code, smaller widths and depths, ``TINY``); the registered builders below choose its arguments. With the ResNet50 arguments it builds exactly the
layers of ``pytorchvideo.models.resnet.create_resnet(model_depth=50, stem_conv_kernel_size=(1,7,7))``;
only the head is our own, so that the pooled feature is reachable for the contrastive projection.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from torch import nn

# pytorchvideo imports fvcore, which scripts a loss with the deprecated torch.jit.script at import time: a
# FutureWarning in every command's output that is not ours to fix.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.script")
    from pytorchvideo.models.resnet import BottleneckBlock, create_bottleneck_block, create_res_stage
    from pytorchvideo.models.stem import create_res_basic_stem

from trainable.models.registry import register

Kernel = tuple[int, int, int]
# Slow-only pathway (SlowFast paper): temporal kernels only in res4 and res5.
SLOW_ONLY_TEMPORAL = (1, 1, 3, 3)


def create_basic_block(
    *,
    dim_in: int,
    dim_inner: int,
    dim_out: int,
    conv_a_kernel_size: Kernel,
    conv_a_stride: Kernel,
    conv_b_stride: Kernel,
    norm: Callable[..., nn.Module] = nn.BatchNorm3d,
    activation: Callable[..., nn.Module] = nn.ReLU,
    **_: object,
) -> nn.Module:
    """Two-convolution residual branch with ``create_bottleneck_block``'s signature.

    The first convolution is ``kt×3×3`` (``kt`` from ``conv_a_kernel_size``) and carries both the
    temporal and the spatial stride; the second is ``1×3×3``. ``dim_inner`` equals ``dim_out`` here.
    """
    kt = conv_a_kernel_size[0]
    return BottleneckBlock(
        conv_a=nn.Conv3d(
            dim_in,
            dim_out,
            kernel_size=(kt, 3, 3),
            stride=(conv_a_stride[0], conv_b_stride[1], conv_b_stride[2]),
            padding=(kt // 2, 1, 1),
            bias=False,
        ),
        norm_a=norm(dim_out),
        act_a=activation(),
        conv_b=nn.Conv3d(dim_out, dim_out, kernel_size=(1, 3, 3), padding=(0, 1, 1), bias=False),
        norm_b=norm(dim_out),
        act_b=None,
        conv_c=nn.Identity(),
        norm_c=None,
    )


class ResNet3d(nn.Module):
    """Stem and residual stages, then global average pooling, dropout and a linear classifier."""

    prefers_channels_last = True  # 3D convolutions: the layout GPU kernels for them prefer (config ``channels_last``)

    def __init__(
        self,
        *,
        num_classes: int,
        depths: Sequence[int],
        stem_width: int = 64,
        bottleneck: bool = True,
        temporal_kernels: Sequence[int] = SLOW_ONLY_TEMPORAL,
        stem_pool: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(temporal_kernels) != len(depths):
            raise ValueError("temporal_kernels needs one entry per stage")
        blocks: list[nn.Module] = [
            create_res_basic_stem(
                in_channels=3,
                out_channels=stem_width,
                conv_kernel_size=(1, 7, 7),
                conv_stride=(1, 2, 2),
                conv_padding=(0, 3, 3),
                pool=nn.MaxPool3d if stem_pool else None,
                pool_kernel_size=(1, 3, 3),
                pool_stride=(1, 2, 2),
                pool_padding=(0, 1, 1),
            )
        ]
        expansion = 4 if bottleneck else 1
        dim_in = stem_width
        for idx, (depth, kt) in enumerate(zip(depths, temporal_kernels)):
            dim_inner = stem_width * 2**idx
            dim_out = dim_inner * expansion
            spatial_stride = 1 if idx == 0 else 2
            blocks.append(
                create_res_stage(
                    depth=depth,
                    dim_in=dim_in,
                    dim_inner=dim_inner,
                    dim_out=dim_out,
                    bottleneck=create_bottleneck_block if bottleneck else create_basic_block,
                    conv_a_kernel_size=(kt, 1, 1),
                    conv_a_stride=(1, 1, 1),
                    conv_a_padding=(kt // 2, 0, 0),
                    conv_b_kernel_size=(1, 3, 3),
                    conv_b_stride=(1, spatial_stride, spatial_stride),
                    conv_b_padding=(0, 1, 1),
                )
            )
            dim_in = dim_out
        self.blocks = nn.Sequential(*blocks)
        self.num_features = dim_in
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x)).flatten(1)

    def forward_temporal(self, x: torch.Tensor) -> torch.Tensor:
        """Features pooled over space only, ``(batch, T, num_features)``: the stages keep every frame (temporal
        stride 1), so step ``t`` describes input frame ``t`` (TimeBalance's unpooled loss, Supp. D)."""
        return self.blocks(x).mean(dim=(3, 4)).transpose(1, 2)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# CPU size: a few thousand parameters per stage, temporal kernels in every stage and no stem pooling,
# since the synthetic classes are motions in 32-pixel frames: time has to be seen early, resolution kept.
TINY = dict(depths=(1, 1, 1, 1), stem_width=8, temporal_kernels=(3, 3, 3, 3), stem_pool=False, dropout=0.0)


@register("resnet3d_50")
def resnet3d_50(num_classes: int, frames: int, size: int, scale: str = "full") -> ResNet3d:
    """Slow-only 3D-ResNet50, the paper's primary ("ResNet-B"); bottleneck blocks at every scale."""
    if scale == "tiny":
        return ResNet3d(num_classes=num_classes, bottleneck=True, **TINY)
    return ResNet3d(num_classes=num_classes, depths=(3, 4, 6, 3))


@register("resnet3d_18")
def resnet3d_18(num_classes: int, frames: int, size: int, scale: str = "full") -> ResNet3d:
    """Basic-block 3D-ResNet18 ("ResNet-S"), CMPL's auxiliary."""
    if scale == "tiny":
        return ResNet3d(num_classes=num_classes, bottleneck=False, **TINY)
    return ResNet3d(num_classes=num_classes, depths=(2, 2, 2, 2), bottleneck=False)


@register("resnet3d_tiny")
def resnet3d_tiny(num_classes: int, frames: int, size: int, scale: str = "full") -> ResNet3d:
    """``resnet3d_18`` at tiny scale, by name, for configs that want the CPU model at any scale."""
    return resnet3d_18(num_classes, frames, size, scale="tiny")
