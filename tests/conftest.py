"""Shared fixtures: a tiny synthetic dataset and config, one local Ray instance and one S3 server per test session."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow.parquet as pq
import pytest
import yaml

from processes import get_json

if TYPE_CHECKING:
    from results.store import Store

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
        "resize_min": 32,
        "resize_max": 36,
        "test_clips": 2,
        "test_crops": 1,
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


def timebalance_config(root: Path, **overrides: Any) -> dict[str, Any]:
    """TimeBalance with the tiny backbone: its three teacher stages and its student, 2 epochs each unless told."""
    config = tiny_config(root, method="timebalance", aux_backbone=None, scale="tiny", epochs=2, steps_per_epoch=2)
    return {**config, **overrides}


@pytest.fixture(scope="session")
def ray_local(s3_server: str) -> Iterator[str]:
    """One local Ray instance for the whole session, as the service starts one; yields its dashboard URL.

    Started after the session's S3 server, whose endpoint and keys its workers inherit, as a cluster's nodes get
    them from the environment of ``ray start``. ``ray.shutdown`` ends exactly the processes it started."""
    import ray

    from search.runner import start_local_ray
    from search.tune import DRIVER_RESOURCE

    yield start_local_ray(num_cpus=2, log_to_driver=False, resources={DRIVER_RESOURCE: 100})
    ray.shutdown()


# The S3 server's address and keys, set in this process's environment (and so in every process a test starts) by the
# ``s3_server`` fixture: the store, Ray's storage and boto3 all find the server the way AWS tools do.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 server on loopback for the session (moto's server mode: pyarrow's S3 client ignores in-process
    mocks), ended by its pid; yields its endpoint, which ``AWS_ENDPOINT_URL`` names while it runs (and so every
    process started meanwhile: the session's Ray, a test's search drivers and nodes)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(log, "w"), stderr=subprocess.STDOUT)  # fmt: skip
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", **S3_KEYS}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, log.read_text()
                time.sleep(0.2)
        yield env["AWS_ENDPOINT_URL"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def s3_store(s3_server: str) -> Any:
    """A store on a fresh bucket of the session's S3 server: ``results.store.Store("s3://<bucket>/store")``."""
    import pyarrow.fs as pafs

    from results.store import Store

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    pafs.S3FileSystem(endpoint_override=s3_server, allow_bucket_creation=True).create_dir(bucket)
    return Store(f"s3://{bucket}/store")


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
    trial builds the three teacher stages (their epoch rows with no trial id and the result's stage_key, the last fine-tuning epoch
    with both teachers' top-1 of 90 and 80) and the ω = 1 trial reuses them (after waiting, on seed 1); every
    student trains 4 epochs. The stage results' folders lie under ``<store>/stage_results`` (``trainable.stages``).
    ``store``: a ``results.store.Store``."""
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
                    store.append("epochs", search_id, [{"trial_id": None, "stage": stage, "stage_key": key, "seed": seed,
                                                        "epoch": n, "loss": 2.0 / n, "lr": 1e-3, "epoch_time_s": 1.0,
                                                        "top1": math.nan, "aux_top1": math.nan, **tested}])  # fmt: skip
                store.fs.create_dir(path, recursive=True)
                for name, text in (("result/teacher.pt", "weights"), ("done.json", json.dumps({"owner": trial_id}))):
                    with store.fs.open_output_stream(f"{path.removesuffix('/result')}/{name}") as out:
                        out.write(text.encode())
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


# A small search written row by row into a store (test_store, test_s3).
def trial(store: Store, trial_id: str, status: str, threshold: float, seed: int, wall_s: float = 0.0) -> None:
    store.append("trials", "s", [{"trial_id": trial_id, "threshold": threshold, "seed": seed, "epochs": 3,
                                  "status": status, "stopped_at_epoch": None, "error": None, "wall_s": wall_s}])  # fmt: skip


def epoch(store: Store, trial_id: str, n: int, top1: float, loss: float) -> None:
    store.append("epochs", "s", [{"trial_id": trial_id, "seed": 0, "epoch": n, "top1": top1, "loss": loss, "aux_top1": math.nan}])


def demo_search(store: Store) -> Store:
    """Writes the ``store`` fixture's search ``s`` into ``store``."""
    store.append("searches", "s", [{"search_id": "s", "name": "demo", "metric": "top1", "mode": "max", "status": "running",
                                    "num_trials": 0, "started_at": "2026-01-01"}])  # fmt: skip
    for trial_id, threshold, seed in (("a", 0.5, 0), ("b", 0.9, 0), ("c", 0.5, 1)):
        trial(store, trial_id, "running", threshold, seed)
        for n in (1, 2, 3):
            epoch(store, trial_id, n, 10.0 * n + (trial_id == "b") + 2 * (trial_id == "c"), 1.0 / n)
    epoch(store, "a", 2, 99.0, 0.1)
    trial(store, "a", "completed", 0.5, 0, wall_s=5.0)
    trial(store, "c", "completed", 0.5, 1, wall_s=6.0)
    return store


# Searches killed and resumed, and the nodes of a local cluster (test_faults, test_cluster).
EPOCHS = 4  # the fault tests' trials: long enough to be killed inside an epoch


def grid_space(tmp_path: Path, data: Path, thresholds: list[float], **fields: Any) -> Path:
    """Trials long enough to be killed inside an epoch: 4 epochs of 12 steps (about a second each here)."""
    return tiny_space(
        tmp_path, data, space={"threshold": {"grid": thresholds}}, seeds=[0],
        base=tiny_config(data, epochs=EPOCHS, steps_per_epoch=12), **fields,
    )  # fmt: skip


def epochs_of(store: Store, search_id: str) -> list[dict]:
    from results.tables import read

    if not store.parts("epochs", search_id):
        return []
    return read(store, "epochs", search_id).to_pylist()


def check_tables(store: Store, search_id: str, trials: int) -> tuple[list[dict], list[dict]]:
    """The search ended, every trial completed, and its epochs are exactly 1..EPOCHS, both through the views and
    in the raw files the final compaction left (which a user may read with pyarrow)."""
    from results.tables import read

    trial_rows = read(store, "trials", search_id).to_pylist()
    epoch_rows = read(store, "epochs", search_id).to_pylist()
    assert len(trial_rows) == trials
    assert all(t["status"] == "completed" and t["epochs_run"] == EPOCHS for t in trial_rows), trial_rows
    for trial in trial_rows:
        mine = sorted(e["epoch"] for e in epoch_rows if e["trial_id"] == trial["trial_id"])
        assert mine == list(range(1, EPOCHS + 1)), (trial["trial_id"], mine)
    raw = pq.read_table(f"{store.root}/epochs", filesystem=store.fs).to_pylist()
    raw = [r for r in raw if r["search_id"] == search_id]
    def keys(rows: list[dict]) -> list[tuple]:  # a stage result's rows have no trial id: its key instead
        return sorted((r["trial_id"] or "", r.get("stage_key") or "", r["epoch"]) for r in rows)

    assert keys(raw) == keys(epoch_rows)
    [search] = read(store, "searches", search_id).to_pylist()
    assert search["status"] == "completed" and search["num_trials"] == trials
    return trial_rows, epoch_rows


@contextmanager
def two_nodes(folder: Path, temp_dir: Path | None = None, cwd: Path | None = None) -> Iterator[tuple[dict, subprocess.Popen]]:
    """A loopback cluster: a head (with the trial drivers' resource) and a second raylet, one CPU each, the second
    with its own ``temp_dir`` and working directory ``cwd`` if given; yields the head's addresses and the second
    node's process (a test may kill it). Both are ended by their pids when the block ends."""
    from processes import kill_tree, start_head, start_node, wait_for

    head, address = start_head(folder / "head.log", cpus=1)
    try:
        node, _ = start_node(folder / "node.log", head=False, address=address["gcs"], cpus=1, temp_dir=temp_dir, cwd=cwd)
        try:
            wait_for(lambda: alive_nodes(address["dashboard"]) == 2, 120, "the second node to join", poll=1)
            yield address, node
        finally:
            if node.poll() is None:
                kill_tree(node)
    finally:
        kill_tree(head)


def alive_nodes(dashboard: str) -> int:
    try:
        nodes = get_json(f"{dashboard}/api/v0/nodes?limit=10")["data"]["result"]["result"]
    except OSError:
        return 0
    return sum(n["state"] == "ALIVE" for n in nodes)


def second_node(dashboard: str) -> str:
    """The id of the node that is not the head."""
    nodes = get_json(f"{dashboard}/api/v0/nodes?limit=10")["data"]["result"]["result"]
    [other] = [n["node_id"] for n in nodes if not n["is_head_node"]]
    return other


def worker_on(dashboard: str, node_id: str) -> bool:
    actors = get_json(f"{dashboard}/api/v0/actors?limit=1000&detail=true")["data"]["result"]["result"]
    return any(a["class_name"] == "RayTrainWorker" and a["state"] == "ALIVE" and a.get("node_id") == node_id for a in actors)


# A search's rows written directly, as its trials would (test_report, test_dashboards).
def write_search(store: Store, search_id: str, space: dict, resources: dict, trials: list[dict], epochs: list[dict]) -> None:
    store.append("searches", search_id, [{
        "search_id": search_id, "name": space["name"], "space_file": f"spaces/{space['name']}.yaml",
        "space_yaml": yaml.safe_dump(space), "space_hash": "abc", "overrides": json.dumps({"dataset": "synthetic"}),
        "seeds": "[0, 1]", "metric": "top1", "mode": "max", "planned_trials": len(trials), "status": "completed",
        "started_at": "2026-11-29T00:00:00+00:00", "resumed_at": None, "ended_at": "2026-11-29T01:00:00+00:00",
        "versions": json.dumps({"ray": "2.60.0"}), "git_commit": "0123abcd", "store": store.uri, "ray_address": "local",
        "resources": json.dumps(resources),
    }])  # fmt: skip
    store.append("trials", search_id, trials)
    store.append("epochs", search_id, epochs)
