"""The torch backend of a trial's Train run, in a module that does not import torch.

Ray's ``TorchTrainer`` is a ``DataParallelTrainer`` whose ``TorchConfig`` sets up torch's process group; but
``TorchConfig``'s module imports torch, and two processes of every trial that never run a tensor op import that
module: the trial's own process (to build the trainer) and its Train controller (to unpickle the config). On
a 2-core machine that is about 2 s of CPU each, at every trial's start (docs/ray.md). ``TrialTorchConfig``
does what ``TorchConfig`` does for this project's trials (gloo on CPUs, nccl with GPUs, ``env://``
initialisation, torch's distributed environment variables, the process group's timeout and shutdown) by
asking the workers, which import torch anyway, to run Ray's own torch functions. Before the process group it
asks them to begin importing the training loop (``trainable.worker.warm_up``), so those imports overlap with
the rest of Ray's start of the worker group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray.train._internal.utils import get_address_and_port
from ray.train import ScalingConfig
from ray.train.backend import Backend, BackendConfig
from ray.train.constants import DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.util import TrainingFramework
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from trainable.worker import warm_up


def trial_trainer(train_fn: Callable[[dict], None], *, scaling_config: ScalingConfig, **kwargs: Any) -> DataParallelTrainer:
    """A ``TorchTrainer`` in all but its class: a data-parallel trainer with ``TrialTorchConfig``, whose
    process group uses nccl where ``scaling_config`` gives the workers GPUs and gloo otherwise, as
    ``TorchTrainer`` chooses."""
    backend = TrialTorchConfig(backend="nccl" if scaling_config.use_gpu else "gloo")
    return TrialTrainer(train_fn, backend_config=backend, scaling_config=scaling_config, **kwargs)


class TrialTrainer(DataParallelTrainer):
    """Train's data-parallel trainer, less the Ray Datasets machinery when it is given no datasets (a trial
    reads its videos itself): Train's datasets callback would start an actor for them in every run anyway,
    a process per trial (docs/ray.md)."""

    def _create_default_callbacks(self) -> list:
        callbacks = super()._create_default_callbacks()
        return callbacks if self.datasets else [c for c in callbacks if not isinstance(c, DatasetsCallback)]


@dataclass
class TrialTorchConfig(BackendConfig):
    """torch's process group for a trial's workers (``backend``: gloo or nccl; ``timeout_s``: how long a
    collective may wait, Ray's default), set up by ``TrialTorchBackend``."""

    backend: str = "gloo"
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type:
        return TrialTorchBackend

    @property
    def train_func_context(self) -> type:
        return _TorchDevice

    @property
    def framework(self) -> TrainingFramework:
        return TrainingFramework.TORCH


class TrialTorchBackend(Backend):
    """Run by the trial's Train controller, which never imports torch: every step that needs torch is a
    function the workers run."""

    def on_start(self, worker_group: Any, backend_config: TrialTorchConfig) -> None:
        worker_group.execute(warm_up)
        address, port = worker_group.execute_single(0, get_address_and_port)
        size = len(worker_group)
        joined = [
            worker_group.execute_single_async(rank, _join_process_group, backend_config, rank, size, address, port)
            for rank in range(size)
        ]
        ray.get(joined)

    def on_shutdown(self, worker_group: Any, backend_config: TrialTorchConfig) -> None:
        left = worker_group.execute_async(_leave_process_group, len(worker_group) > 1)
        try:
            ray.get(left, timeout=float(os.environ.get(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)))
        except ray.exceptions.GetTimeoutError:  # as Ray's: a worker stuck in a collective must not hold the trial
            pass


def _join_process_group(config: TrialTorchConfig, rank: int, size: int, address: str, port: int) -> None:
    """On a worker: torch's distributed environment (``MASTER_ADDR``/``PORT``, ranks, the device), then the
    process group, by Ray's own torch functions."""
    from ray.train.torch import config as ray_torch

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)
    ray_torch._set_torch_distributed_env_vars()
    ray_torch._setup_torch_process_group(config.backend, rank, size, "env://", config.timeout_s)


def _leave_process_group(destroy: bool) -> None:
    from ray.train.torch import config as ray_torch

    ray_torch._shutdown_torch(destroy_process_group=destroy)


class _TorchDevice:
    """Around the train function on a worker: Ray's torch context (the worker's CUDA device made current)."""

    def __enter__(self) -> None:
        from ray.train.torch.config import TorchConfigContextManager

        self._inner = TorchConfigContextManager()
        self._inner.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)
