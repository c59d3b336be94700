"""Where the loop runs: inside a Ray Train worker, or in a plain process (benchmarks, debugging).

The loop talks only to a ``Session``, so it needs no branch on how it was launched; what is Ray-specific
(rank, device, DDP wrapping, reporting with a checkpoint) lives here.
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.distributed as dist
from torch import nn

STATE_FILE = "state.pt"


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A loader's batch with its tensors on ``device`` (asynchronously where the memory is pinned)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class StageSink(Protocol):
    """Where a pipeline method's stage rows go (``results.ledger.EpochWriter`` in a search)."""

    def write_stage_epoch(self, stage: str, key: str, metrics: dict[str, Any]) -> None: ...

    def write_stage(self, row: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class StageAccess:
    """Where a pipeline method's shared stage results live and who this run is to them: what TimeBalance needs
    of where it runs, one field of every session, so no method branches on how the run was launched."""

    owner: str  # this run, in a stage result's record of who built it (the trial's id in a search)
    root: str  # where shared stage results live (``trainable.stages.StageStore``)
    sink: StageSink  # where the rows of the stages it built or used go


class Session(Protocol):
    rank: int
    world_size: int
    device: torch.device
    started: float  # wall clock when this process began the run (before importing the loop)
    startup_s: float  # what starting the worker took before that, from the trial's ``fit``; NaN if unknown
    stages: StageAccess

    def prepare(self, net: nn.Module) -> nn.Module:
        """Move to the device; wrap for data-parallel training when there are several workers."""
        ...

    def restore(self) -> dict[str, Any] | None:
        """The state of the checkpoint this run starts from, if any."""
        ...

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Every worker calls this once per epoch; ``state`` (rank 0 only) becomes the checkpoint."""
        ...

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over workers, in place."""
        ...


class EpochSink(StageSink, Protocol):
    """A trial's ledger writer (``results.ledger.EpochWriter``): its epochs, and its stage rows."""

    store: Any  # ``results.store.Store``
    trial_id: str

    def write(self, metrics: dict[str, Any], checkpoint_path: str | None) -> None: ...


class MemorySink:
    """Stage rows kept in memory, for a run outside a search."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.stages: list[dict[str, Any]] = []

    def write_stage_epoch(self, stage: str, key: str, metrics: dict[str, Any]) -> None:
        self.epochs.append({**metrics, "stage": stage, "stage_key": key})

    def write_stage(self, row: dict[str, Any]) -> None:
        self.stages.append(row)


def _scratch(owner: object) -> str:
    """A folder for stage results that lives as long as ``owner``: a run outside a search shares them with nobody."""
    folder = tempfile.TemporaryDirectory(prefix="stages-")
    owner._scratch = folder  # type: ignore[attr-defined]  # removed when the session is
    return folder.name


class RaySession:
    """A Ray Train worker of a trial's torch run (the process group is already set up by Ray).

    ``writer`` is the trial's ledger writer: rank 0 appends the row of the checkpoint it resumes from again,
    in case the run that stored the checkpoint ended before appending its row (``results.ledger``); it is also
    where the trial's stage rows go (``stages.sink``), and its store holds the stage results. Without one (a
    Train run outside a search) stage results live in a scratch folder and their rows in memory.
    """

    def __init__(self, writer: EpochSink | None = None, started: float | None = None, startup_s: float = math.nan) -> None:
        import ray.train
        import ray.train.torch
        import ray.util

        self._train = ray.train
        self._node_ip = ray.util.get_node_ip_address()
        self._writer = writer
        self.started = time.time() if started is None else started
        self.startup_s = startup_s
        context = ray.train.get_context()
        # Stage results live under the search's store, so every trial of every search on it can reuse them.
        if writer is not None:
            self.stages = StageAccess(writer.trial_id, writer.store.uri, writer)
        else:
            self.stages = StageAccess(context.get_experiment_name(), _scratch(self), MemorySink())
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare(self, net: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(net)

    def restore(self) -> dict[str, Any] | None:
        checkpoint = self._train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
        if self._writer is not None and self.rank == 0 and "metrics" in state:
            self._writer.write(state["metrics"], checkpoint.path)
        return state

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        metrics = {**metrics, "node_ip": self._node_ip}
        if state is None:
            self._train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            self._train.report(metrics, checkpoint=self._train.Checkpoint.from_directory(folder))

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if dist.is_available() and dist.is_initialized() and self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor


class LocalSession:
    """One process, no Ray: metrics go to ``on_report``; the last state is kept to resume from."""

    def __init__(
        self,
        on_report: Callable[[dict[str, Any]], None] = lambda metrics: None,
        state: dict[str, Any] | None = None,
        device: str = "cpu",
        stage_root: str | None = None,
    ) -> None:
        """``stage_root``: where stage results are kept and found (a benchmark's runs share them); None: a
        temporary folder of this session's own."""
        self.rank, self.world_size = 0, 1
        self.device = torch.device(device)
        self.started, self.startup_s = time.time(), math.nan
        self.on_report = on_report
        self.state = state
        # two runs on one stage folder are two owners; the rows of the stages it used are kept (``stages.sink``)
        self.stages = StageAccess(f"local-{uuid.uuid4().hex[:8]}", stage_root or _scratch(self), MemorySink())

    def prepare(self, net: nn.Module) -> nn.Module:
        return net.to(self.device)

    def restore(self) -> dict[str, Any] | None:
        return self.state

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if state is not None:
            self.state = state
        self.on_report(metrics)

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor
