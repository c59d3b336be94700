"""Batch norm synchronised across workers and contrastive negatives gathered from every worker.

Two real Ray Train workers (gloo on CPU) each hold half of a batch; what they compute together must equal
what one process computes on the whole batch: outputs, losses and gradients.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from trainable import losses, parallel

FULL_BATCH, CHANNELS, WORKERS = 6, 4, 2


def problem() -> dict[str, torch.Tensor | nn.Module]:
    """The same batch, weights and batch-norm layer in every process (a fixed seed)."""
    g = torch.Generator().manual_seed(7)
    bn = nn.BatchNorm3d(CHANNELS)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(CHANNELS, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(CHANNELS, generator=g))
    return {
        "x": torch.randn(FULL_BATCH, CHANNELS, 2, 3, 3, generator=g) * 2 + 1,
        "w": torch.randn(FULL_BATCH, CHANNELS, 2, 3, 3, generator=g),
        "zp": torch.randn(FULL_BATCH, 5, generator=g),
        "za": torch.randn(FULL_BATCH, 5, generator=g),
        "bn": bn,
    }


def worker(config: dict[str, Any]) -> None:
    """One Train worker: its half of the batch through the cross-worker ops; results saved for the test."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    p = problem()
    rows = slice(rank * FULL_BATCH // WORKERS, (rank + 1) * FULL_BATCH // WORKERS)

    bn = parallel.convert_batchnorm(p["bn"]).train()
    x = p["x"][rows].clone().requires_grad_()
    out = bn(x)
    (out * p["w"][rows]).sum().backward()

    zp, za = p["zp"][rows].clone().requires_grad_(), p["za"][rows].clone().requires_grad_()
    (all_p, offset), (all_a, _) = parallel.gather_rows(zp), parallel.gather_rows(za)
    loss = losses.contrastive_loss(zp, za, 0.5, losses.GlobalBatch(all_p, all_a, offset))
    loss.backward()
    torch.save(
        {
            "rows": rows, "out": out.detach(), "x_grad": x.grad, "weight_grad": bn.weight.grad, "bias_grad": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var,
            "loss": loss.detach(), "zp_grad": zp.grad, "za_grad": za.grad,
        },
        Path(config["out"]) / f"rank{rank}.pt",
    )  # fmt: skip
    ray.train.report({"done": 1})


@pytest.fixture(scope="module")
def two_workers(ray_local: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    import sys

    from ray import cloudpickle
    from ray.train import FailureConfig, RunConfig, ScalingConfig

    from search.backend import trial_trainer

    # Workers cannot import a test module: ship this one's functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out = tmp_path_factory.mktemp("parallel")
    result = trial_trainer(  # the trials' own process group, two workers
        worker,
        train_loop_config={"out": str(out)},
        scaling_config=ScalingConfig(num_workers=WORKERS, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(
            name="parallel", storage_path=str(out / "ray"), failure_config=FailureConfig(controller_failure_limit=1)
        ),
    ).fit()
    assert result.error is None
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORKERS)]


def test_sync_batchnorm_of_two_workers_equals_batchnorm_of_the_whole_batch(two_workers: list[dict[str, Any]]) -> None:
    p = problem()
    bn = p["bn"].train()
    x = p["x"].clone().requires_grad_()
    out = bn(x)
    (out * p["w"]).sum().backward()

    assert torch.allclose(torch.cat([r["out"] for r in two_workers]), out.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([r["x_grad"] for r in two_workers]), x.grad, atol=1e-5)
    # each worker's loss is its half of the sum, so the workers' parameter gradients add up to the whole's
    assert torch.allclose(sum(r["weight_grad"] for r in two_workers), bn.weight.grad, atol=1e-4)
    assert torch.allclose(sum(r["bias_grad"] for r in two_workers), bn.bias.grad, atol=1e-4)
    for r in two_workers:  # every worker tracks the whole batch's statistics
        assert torch.allclose(r["running_mean"], bn.running_mean, atol=1e-6)
        assert torch.allclose(r["running_var"], bn.running_var, atol=1e-5)
    # and they differ from what one worker's half alone would give: the test can fail
    alone = copy.deepcopy(problem()["bn"]).train()(p["x"][two_workers[0]["rows"]])
    assert not torch.allclose(alone, two_workers[0]["out"], atol=1e-3)


def test_global_negatives_of_two_workers_equal_the_loss_on_the_whole_batch(two_workers: list[dict[str, Any]]) -> None:
    p = problem()
    zp, za = p["zp"].clone().requires_grad_(), p["za"].clone().requires_grad_()
    whole = losses.contrastive_loss(zp, za, 0.5)
    whole.backward()

    mean = sum(r["loss"] for r in two_workers) / WORKERS
    assert torch.allclose(mean, whole.detach(), atol=1e-6)
    # DDP averages gradients over workers; each worker's gradient already sums every worker's loss.
    assert torch.allclose(torch.cat([r["zp_grad"] for r in two_workers]) / WORKERS, zp.grad, atol=1e-6)
    assert torch.allclose(torch.cat([r["za_grad"] for r in two_workers]) / WORKERS, za.grad, atol=1e-6)
    local = losses.contrastive_loss(p["zp"][two_workers[0]["rows"]], p["za"][two_workers[0]["rows"]], 0.5)
    assert not torch.allclose(local, two_workers[0]["loss"])  # local negatives are a different loss


def test_in_one_process_the_cross_worker_ops_are_the_local_ones() -> None:
    p = problem()
    plain, synced = copy.deepcopy(p["bn"]).train(), parallel.convert_batchnorm(copy.deepcopy(p["bn"])).train()
    assert isinstance(synced, parallel.CrossWorkerBatchNorm)
    assert torch.allclose(plain(p["x"]), synced(p["x"]), atol=1e-6)
    assert torch.allclose(plain.running_var, synced.running_var)
    rows, offset = parallel.gather_rows(p["zp"])
    assert rows is p["zp"] and offset == 0


def test_converted_model_keeps_its_state_dict_keys() -> None:
    """Checkpoints move between split and sync batch norm."""
    from trainable import models

    net = models.build("resnet3d_50", 3, 4, 32, "tiny")
    keys = set(net.state_dict())
    synced = parallel.convert_batchnorm(copy.deepcopy(net))
    assert set(synced.state_dict()) == keys
    assert not any(type(m) is nn.BatchNorm3d for m in synced.modules())
    assert synced.load_state_dict(net.state_dict()) is not None
