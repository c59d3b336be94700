"""Shared fixtures: a tiny synthetic dataset and config, and one local Ray instance per test session."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

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


def write_space(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def tiny_space(tmp_path: Path, data: Path, **fields: Any) -> Path:
    base = tiny_config(data)
    base.pop("threshold", None)
    spec = {
        "name": "tiny",
        "base": base,
        "space": {"threshold": {"grid": [0.0, 1.0]}},
        "seeds": [0, 1],
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "max_concurrent": 2,
        **fields,
    }
    return write_space(tmp_path / "tiny.yaml", **spec)


# TimeBalance's teacher stages in pipeline order, and the epochs each runs in ``timebalance_search``: more than the
# student's 4, so that a summary counting a stage's rows would show it.
STAGES = {"pretrain_invariant": 6, "pretrain_distinctive": 6, "finetune_teachers": 5}
STUDENT_EPOCHS = 4


def stage_key(stage: str, seed: int) -> str:
    return hashlib.sha256(f"{stage} {seed}".encode()).hexdigest()[:16]


def student_top1(omega: float, seed: int, n: int) -> float:
    return 10.0 * n + 10 * omega + seed


def timebalance_search(store: Any, search_id: str = "tb") -> None:
    """A TimeBalance search over ω ∈ {0.5, 1} on seeds 0 and 1, as its trials write it: on each seed, the ω = 0.5
    trial builds the three teacher stages (their epoch rows under the results' own ids, the last fine-tuning epoch
    with both teachers' top-1 of 90 and 80) and the ω = 1 trial reuses them (after waiting, on seed 1); every
    student trains 4 epochs. The stage results' folders lie under ``<store>/stage_results`` (``trainable.stages``).
    ``store``: a ``results.store.Store``."""
    from results.ledger import stage_trial_id

    space = {"name": "tb-test", "space": {"omega": {"grid": [0.5, 1.0]}}, "seeds": 2, "search": {"type": "grid"}}
    store.append("searches", search_id, [{"search_id": search_id, "name": "tb-test", "space_yaml": json.dumps(space),
                                          "seeds": "[0, 1]", "metric": "top1", "mode": "max", "planned_trials": 4,
                                          "status": "completed", "started_at": "2026-12-01T00:00:00+00:00"}])  # fmt: skip
    clock = iter(range(10_000))
    for omega, seed in ((0.5, 0), (1.0, 0), (0.5, 1), (1.0, 1)):
        trial_id, builds = f"tb{omega}-{seed}", omega == 0.5
        row = {"trial_id": trial_id, "method": "timebalance", "omega": omega, "seed": seed, "status": "running",
               "stopped_at_epoch": None, "wall_s": None, "started_at": f"2026-12-01T00:{next(clock):02d}:00+00:00"}  # fmt: skip
        store.append("trials", search_id, [row])
        for stage, epochs in STAGES.items():
            key = stage_key(stage, seed)
            path = store.root + f"/stage_results/{stage}/{key}/result"
            if builds:
                for n in range(1, epochs + 1):
                    tested = {"top1": 90.0, "aux_top1": 80.0} if stage == "finetune_teachers" and n == epochs else {}
                    store.append("epochs", search_id, [{"trial_id": stage_trial_id(stage, key), "stage": stage, "seed": seed,
                                                        "epoch": n, "loss": 2.0 / n, "lr": 1e-3, "epoch_time_s": 1.0,
                                                        "top1": math.nan, "aux_top1": math.nan, **tested}])  # fmt: skip
                Path(path).mkdir(parents=True)
                (Path(path) / "teacher.pt").write_text("weights")
                (Path(path).parent / "done.json").write_text(json.dumps({"owner": trial_id}))
            waited = 0.0 if builds or seed == 0 else 3.0
            store.append("stages", search_id, [{"trial_id": trial_id, "seed": seed, "stage": stage, "stage_key": key,
                                                "reused": not builds, "built_by": f"tb0.5-{seed}", "build_s": 10.0,
                                                "waited_s": waited, "path": path,
                                                "recorded_at": f"2026-12-01T01:{next(clock):02d}:00+00:00"}])  # fmt: skip
        for n in range(1, STUDENT_EPOCHS + 1):
            store.append("epochs", search_id, [{"trial_id": trial_id, "stage": "student", "seed": seed, "epoch": n,
                                                "loss": 1.0 / n, "lr": 0.1, "top1": student_top1(omega, seed, n),
                                                "aux_top1": math.nan}])  # fmt: skip
        store.append("trials", search_id, [row | {"status": "completed", "wall_s": 100.0}])
