"""Shared fixtures: a tiny synthetic dataset and config, and one local Ray instance per test session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

# Set before Ray starts so every Ray process inherits them (docs/ray.md).
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three motion classes, eight training and two test videos each, 16 frames of 32×32."""
    from trainable.config import TrainConfig
    from trainable.data.synthetic import ensure_synthetic

    root = tmp_path_factory.mktemp("data") / "synthetic"
    ensure_synthetic(TrainConfig.parse(tiny_config(root)).synthetic_spec(), root, progress=False)
    return root


def tiny_config(root: Path, **overrides: Any) -> dict[str, Any]:
    """A config that trains actnetformer (or ``method``) with the tiny backbones in a few seconds per epoch; the
    settings below that ``method`` does not read are left out (the config would refuse them), ``overrides`` kept."""
    from trainable import catalog
    from trainable.config import refused_keys

    values = {
        "method": "actnetformer",
        "primary_backbone": "resnet3d_tiny",
        "aux_backbone": "timesformer_tiny",
        "dataset": "synthetic",
        "synthetic_root": str(root),
        "synthetic_classes": 3,
        "synthetic_train_per_class": 8,
        "synthetic_test_per_class": 2,
        "synthetic_frames": 16,
        "synthetic_size": 32,
        "cache_decoded": True,
        "primary_frames": 4,
        "primary_stride": 4,
        "aux_frames": 8,
        "aux_stride": 2,
        "input_size": 32,
        "scale_min": 32,
        "scale_max": 36,
        "views_clips": 2,
        "views_crops": 1,
        "labeled_per_class": 2,
        "batch_size": 2,
        "mu": 2,
        "steps_per_epoch": 2,
        "epochs": 2,
        "lr": 0.01,
        **overrides,
    }
    refused = refused_keys(values["method"]) if values["method"] in catalog.METHODS else {}
    return {k: v for k, v in values.items() if k not in refused or k in overrides}


@pytest.fixture(scope="session")
def ray_local() -> Iterator[str]:
    """One local Ray instance for the whole session, as the service starts one; yields its dashboard URL.

    ``ray.shutdown`` ends exactly the processes it started."""
    import ray

    from search.runner import start_local_ray
    from search.tune import DRIVER_RESOURCE

    yield start_local_ray(num_cpus=2, log_to_driver=False, resources={DRIVER_RESOURCE: 100})
    ray.shutdown()


class ObservingSession:
    """A local session that notes, for every model the driver prepares (``net0`` the primary, ``net1`` the
    auxiliary), what its first layer with weights (a convolution, or a transformer's patch projection) is given
    and computes during the run: whether its input and weight are channels_last_3d, and its output's dtype (so a
    test sees the effect of ``channels_last`` and ``precision``, not only that the run finished)."""

    def __new__(cls, **kwargs: Any) -> Any:
        import torch
        from torch import nn

        from trainable.session import LocalSession

        class Observing(LocalSession):
            def __init__(self) -> None:
                super().__init__(**kwargs)
                self.seen: dict[str, set[tuple[bool, bool, Any]]] = {}

            def prepare(self, net: nn.Module) -> nn.Module:
                net = super().prepare(net)
                conv = next(m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.Conv2d, nn.Linear)))
                role = f"net{len(self.seen)}"
                self.seen[role] = set()

                def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
                    layout = torch.channels_last_3d
                    clips, weight = args[0], module.weight
                    self.seen[role].add((clips.dim() == 5 and clips.is_contiguous(memory_format=layout),
                                         weight.dim() == 5 and weight.is_contiguous(memory_format=layout), output.dtype))  # fmt: skip

                conv.register_forward_hook(hook)
                return net

        return Observing()
