"""Heads shared by the methods."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """MLP mapping a backbone's pooled feature into the space where the contrastive loss compares models.

    Three layers to 512-d by default, as in the closest public recipe (docs/method.md §1); the paper does not
    publish its head. Batch norm is left out so that a batch of unlabeled clips of any size works.
    """

    def __init__(self, in_features: int, hidden: int = 512, out_features: int = 512, layers: int = 3) -> None:
        super().__init__()
        dims = [in_features] + [hidden] * (layers - 1) + [out_features]
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            modules.append(nn.Linear(a, b))
            if i < layers - 1:
                modules.append(nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(*modules)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


class TeacherProjection(nn.Module):
    """TimeBalance's projection head for teacher pretraining (its Supp. B.1.2): ``Linear → BN → ReLU → Linear →
    BN``, to 128-d from a 512-d hidden layer (2048 → 512 → 128 for a 3D-ResNet50)."""

    def __init__(self, in_features: int, hidden: int = 512, out_features: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_features, bias=False),
            nn.BatchNorm1d(out_features),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)
