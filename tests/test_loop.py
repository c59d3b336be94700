"""The training loop inside real Ray Train runs of the trials' trainer (gloo on CPU), and in-process."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from trainable.config import TrainConfig
from trainable.loop import run, run_local
from trainable.worker import train_loop_per_worker
from trainable.metrics import METRICS
from trainable.session import LocalSession

from conftest import ObservingSession, tiny_config


def fit(config: dict[str, Any], storage: Path, name: str, workers: int) -> Any:
    """A fresh trainer of the kind trials fit; one with the name and storage of an earlier run resumes from its
    checkpoint."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig

    from search.backend import trial_trainer

    trainer = trial_trainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(
            name=name, storage_path=str(storage), failure_config=FailureConfig(max_failures=0, controller_failure_limit=1)
        ),
    )
    return trainer.fit()


def reported(result: Any) -> list[dict[str, Any]]:
    """Every epoch's metrics, from the checkpoints Train kept (all of them by default)."""
    return [metrics for _, metrics in result.best_checkpoints]


# Two workers also run the full-scale options: batch norm synchronised and negatives gathered across workers.
@pytest.mark.parametrize(
    "workers, options", [(1, {}), (2, {"batchnorm": "sync", "contrastive_negatives": "global"})], ids=["1", "2"]
)
def test_trainer_reports_every_metric_each_epoch_and_resumes(
    ray_local: str, tiny_dataset: Path, tmp_path: Path, workers: int, options: dict[str, Any]
) -> None:
    config = tiny_config(tiny_dataset, threshold=0.0, **options)  # every clip accepted: every metric has a value
    first = fit(config, tmp_path, f"first-{workers}", workers)
    assert first.error is None
    epochs = reported(first)
    assert [m["epoch"] for m in epochs] == [1, 2]
    for metrics in epochs:
        missing = set(METRICS) - set(metrics)
        assert not missing, f"not reported: {missing}"
        for key in METRICS:
            assert isinstance(metrics[key], (int, float)) and not math.isnan(metrics[key]), key
        assert 0 <= metrics["top1"] <= metrics["top5"] <= 100
        assert 0 <= metrics["mask_rate_primary"] <= 1 and metrics["clips_per_s"] > 0

    # a run's start is timed on its first epoch (no trial called fit here: the worker's own start is unknown)
    assert epochs[0]["setup_s"] > 0 and math.isnan(epochs[1]["setup_s"]) and math.isnan(epochs[0]["startup_s"])

    resumed = fit({**config, "epochs": 3}, tmp_path, f"first-{workers}", workers)
    assert resumed.error is None
    # Train keeps the two earlier checkpoints and adds only epoch 3: a restart from epoch 1 would add three.
    assert [m["epoch"] for m in reported(resumed)] == [1, 2, 3]
    assert [c.path for c, _ in resumed.best_checkpoints[:2]] == [c.path for c, _ in first.best_checkpoints]


def test_metrics_a_method_lacks_are_nan(tiny_dataset: Path) -> None:
    history: list[dict[str, Any]] = []
    run_local(tiny_config(tiny_dataset, method="supervised", epochs=1), on_report=history.append)
    (metrics,) = history
    assert set(METRICS) <= set(metrics)
    for key in ("aux_top1", "loss_pl", "loss_ca", "mask_rate_primary", "mask_rate_aux", "pl_acc_primary", "pl_acc_aux"):
        assert math.isnan(metrics[key]), key
    assert not math.isnan(metrics["top1"]) and metrics["loss"] == metrics["loss_sup"]


@pytest.mark.parametrize("workers", [0, 1])
def test_resumed_run_continues_exactly_like_an_uninterrupted_one(tiny_dataset: Path, workers: int) -> None:
    """Randomness is a function of (seed, epoch, rank): epoch 2 after a resume equals epoch 2 without one, also
    where loader workers draw the augmentation."""
    # Two models with different optimizers: both optimizers' states and schedules are restored.
    config = TrainConfig.parse(tiny_config(tiny_dataset, threshold=0.0, aux_optimizer="adamw", aux_lr=1e-3, loader_workers=workers))
    straight: list[dict[str, Any]] = []
    run(config, LocalSession(on_report=straight.append))

    class Crash(Exception):
        pass

    def crash_after_first_epoch(metrics: dict[str, Any]) -> None:
        interrupted.append(metrics)
        if metrics["epoch"] == 1:
            raise Crash

    interrupted: list[dict[str, Any]] = []
    session = LocalSession(on_report=crash_after_first_epoch)
    with pytest.raises(Crash):
        run(config, session)
    run(config, session)  # the session kept the checkpoint of epoch 1
    assert [m["epoch"] for m in interrupted] == [1, 2]
    for key in ("loss", "loss_pl", "loss_ca", "top1", "aux_top1", "mask_rate_primary", "lr"):
        assert interrupted[1][key] == pytest.approx(straight[1][key], rel=1e-6), key


@pytest.mark.parametrize("method", ["actnetformer", "timebalance"])
def test_bf16_autocast_computes_in_bf16_on_cpu(tiny_dataset: Path, method: str) -> None:
    """The GPU precision path (bf16 autocast) is the same code on CPU: with ``precision: bf16`` the models'
    convolutions compute in bfloat16 (fp32 without it), the losses are taken in float32 and stay finite."""
    # One step of each stage and of the training, one test view: enough to see what the flag does.
    extra = {"scale": "tiny", "clips_per_video": 2, "ssl_batch_size": 2} if method == "timebalance" else {"threshold": 0.0}
    extra.update(steps_per_epoch=1, test_clips=1)
    dtypes = {}
    for precision in ("bf16", "fp32"):
        history: list[dict[str, Any]] = []
        session = ObservingSession(on_report=history.append)
        run(TrainConfig.parse(tiny_config(tiny_dataset, method=method, precision=precision, epochs=1, **extra)), session)
        dtypes[precision] = {dtype for seen in session.seen.values() for _, _, dtype in seen}
        (metrics,) = history
        assert all(math.isfinite(metrics[k]) for k in ("loss", "loss_sup", "loss_pl", "top1")), metrics
    assert dtypes == {"bf16": {torch.bfloat16}, "fp32": {torch.float32}}


@pytest.mark.parametrize("method, workers", [("actnetformer", 0), ("actnetformer", 1), ("timebalance", 1)])
def test_on_a_cpu_the_loader_workers_finish_the_batches(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        method: str, workers: int) -> None:  # fmt: skip
    """With ``loader_workers`` on a CPU, the device part of the augmentation (RandAugment, normalisation) runs in
    the loader's worker processes, for every stage of a pipeline too; without workers, in the training process."""
    import os

    from trainable.data import transforms

    calls = tmp_path / "finished_by"

    def noting(part: Any) -> Any:
        def finish(self: Any, clips: torch.Tensor) -> torch.Tensor:
            with calls.open("a") as out:  # the loader's workers are processes of their own: a file hears them all
                out.write(f"{part.__name__} {os.getpid()}\n")
            return part(self, clips)

        return finish

    for part in (transforms.DeviceFinish.weak, transforms.DeviceFinish.strong):
        monkeypatch.setattr(transforms.DeviceFinish, part.__name__, noting(part))
    extra = {"scale": "tiny", "clips_per_video": 2, "ssl_batch_size": 2} if method == "timebalance" else {"threshold": 0.0}
    config = tiny_config(tiny_dataset, method=method, loader_workers=workers, epochs=1, steps_per_epoch=1, test_clips=1, **extra)
    history: list[dict[str, Any]] = []
    run(TrainConfig.parse(config), LocalSession(on_report=history.append))
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    seen = [line.split() for line in calls.read_text().splitlines()]
    assert {part for part, _ in seen} == {"weak", "strong"}
    assert {int(pid) == os.getpid() for _, pid in seen} == {workers == 0}


def test_each_model_has_its_own_optimizer_and_gradient_clip(tiny_dataset: Path) -> None:
    """A CNN with SGD beside a transformer with AdamW; one model's huge gradient does not shrink the other's."""
    import torch

    from trainable.optim import Optimizers

    cfg = TrainConfig.parse(tiny_config(tiny_dataset, lr=0.05, aux_optimizer="adamw", aux_lr=1e-3, aux_weight_decay=0.05, grad_clip=1.0))
    nets = {"primary": torch.nn.Linear(4, 2), "aux": torch.nn.Linear(4, 2)}
    optimizers = Optimizers.cosine(cfg, nets, steps_per_epoch=10)
    primary, aux = optimizers.optimizers["primary"], optimizers.optimizers["aux"]
    assert isinstance(primary, torch.optim.SGD) and isinstance(aux, torch.optim.AdamW)
    assert aux.param_groups[0]["weight_decay"] == 0.05 and primary.param_groups[0]["weight_decay"] == cfg.weight_decay
    optimizers.zero_grad()
    (nets["primary"](torch.ones(1, 4)).sum() * 0.01 + nets["aux"](torch.ones(1, 4)).sum() * 1e6).backward()
    small = [p.grad.clone() for p in nets["primary"].parameters()]
    optimizers.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(nets["primary"].parameters(), small))  # not clipped
    assert torch.nn.utils.get_total_norm([p.grad for p in nets["aux"].parameters()]) <= 1.0 + 1e-4
    # warm-up off: both start at their own learning rate and follow the same cosine
    assert optimizers.lr() < 0.05 and aux.param_groups[0]["lr"] < 1e-3
    assert optimizers.lr() / 0.05 == pytest.approx(aux.param_groups[0]["lr"] / 1e-3)
