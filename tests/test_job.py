"""``ray job submit`` against a real head node with the dashboard, started and stopped by this test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from search.tune import DRIVER_RESOURCE

from test_search import ROOT, tiny_space

RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def head(tmp_path: Path):
    """``ray start --head --block`` as a child process; terminating it stops exactly the processes it started.

    Every port is chosen free, so this head does not collide with the test session's own Ray instance.
    """
    gcs, dashboard, agent, agent_grpc, runtime_env, metrics, client, node, objects = free_ports(9)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    process = subprocess.Popen(
        [
            RAY, "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address", "127.0.0.1", "--port", str(gcs),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
            "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
            "--runtime-env-agent-port", str(runtime_env), "--metrics-export-port", str(metrics),
            "--ray-client-server-port", str(client), "--node-manager-port", str(node), "--object-manager-port", str(objects),
            "--num-cpus", "2", "--resources", json.dumps({DRIVER_RESOURCE: 100}),
        ],
        env=env,
        stdout=open(tmp_path / "head.log", "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                get_json(f"{url}/api/version")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the head did not start:\n" + (tmp_path / "head.log").read_text()[-3000:]) from None
                time.sleep(1)
        yield url, env
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_ray_job_submit_runs_a_search(head: tuple[str, dict], tiny_dataset: Path, tmp_path: Path) -> None:
    url, env = head
    space = tiny_space(tmp_path, tiny_dataset, space={"threshold": {"grid": [0.0, 0.9]}}, seeds=[0])
    store = tmp_path / "store"
    submit = subprocess.run(
        [
            RAY, "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
            sys.executable, "-m", "search", "run", str(space), "--store", str(store), "--name", "job-search",
        ],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "search job-search: trials by top1" in submit.stdout  # the job's own output, streamed back

    jobs = get_json(f"{url}/api/jobs/")
    assert [j["status"] for j in jobs] == ["SUCCEEDED"]
    logs = get_json(f"{url}/api/jobs/{jobs[0]['submission_id']}/logs")["logs"]
    assert "epoch 2/2" in logs  # per-epoch lines of the Train workers reach `ray job logs`

    trials = pq.read_table(store / "trials").to_pylist()
    epochs = pq.read_table(store / "epochs").to_pylist()
    assert sorted(t["threshold"] for t in trials) == [0.0, 0.9]
    assert all(t["status"] == "completed" for t in trials)
    assert len(epochs) == 4
    groups = get_json(f"{url}/api/v0/placement_groups?limit=100")["data"]["result"]["result"]
    assert all(g["state"] == "REMOVED" for g in groups), groups  # no trial left its workers' resources behind
