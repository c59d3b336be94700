"""Shared fixtures: a tiny synthetic dataset and config, one local Ray instance and one S3 server per test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
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
    """A config that trains actnetformer with the tiny backbones in a few seconds per epoch."""
    return {
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
