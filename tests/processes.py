"""Ray nodes and search drivers as child processes of a test, ended by their process ids and nothing else."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import psutil

from search.tune import DRIVER_RESOURCE

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120",
}


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a Ray process of another cluster: without the address of the test
    session's own instance (``search.runner.start_local_ray`` sets it), which would point it at the wrong one."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")}
    return {**env, **ENV, **extra}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(poll)


def kill_tree(process: subprocess.Popen | psutil.Process, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to a process this test started and to every process that descends from it, then reap them.

    The tree is collected before anything is signalled, so a child re-parented on its parent's death is
    still ended; nothing outside the tree is touched. A Ray node is ended with the default, SIGKILL: on SIGTERM
    ``ray start`` stops its processes one by one, with waits of its own (30 s and more here), and nothing a
    test reads comes from that shutdown.
    """
    root = psutil.Process(process.pid)
    tree = [root, *root.children(recursive=True)]
    for proc in tree:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=60)
    for proc in alive:  # ignored SIGTERM for a minute
        proc.kill()
    psutil.wait_procs(alive, timeout=30)
    if isinstance(process, subprocess.Popen):
        process.wait(timeout=60)


def start_node(
    log: Path, *, head: bool, address: str | None = None, cpus: int = 2, resources: dict | None = None,
    temp_dir: Path | None = None, cwd: Path | None = None,
) -> tuple[subprocess.Popen, dict]:
    """``ray start --block`` as a child process (a head, or a node joining ``address``), every port free; with
    its own ``temp_dir`` and working directory ``cwd`` (its workers' too), as a machine of its own would have.

    Returns the process and the node's addresses (``gcs`` and, for a head, ``dashboard``).
    """
    dashboard, agent, agent_grpc, runtime_env, metrics, client, node, objects, gcs = free_ports(9)
    args = [
        RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env), "--metrics-export-port", str(metrics),
        "--node-manager-port", str(node), "--object-manager-port", str(objects), "--num-cpus", str(cpus),
    ]  # fmt: skip
    if head:
        args += [
            "--head", "--port", str(gcs), "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client),
        ]  # fmt: skip
    else:
        args += ["--address", str(address)]
    if resources:
        args += ["--resources", json.dumps(resources)]
    if temp_dir:
        args += ["--temp-dir", str(temp_dir)]
    process = subprocess.Popen(args, env=child_env(), cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return process, {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dashboard}"}


def start_head(log: Path, cpus: int = 2) -> tuple[subprocess.Popen, dict]:
    """A head with the trial drivers' resource and a dashboard, waited for until its dashboard answers."""
    process, address = start_node(log, head=True, cpus=cpus, resources={DRIVER_RESOURCE: 100})

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError("the head did not start:\n" + log.read_text()[-3000:])
        try:
            get_json(f"{address['dashboard']}/api/version")
            return True
        except OSError:
            return False

    try:
        wait_for(up, 120, "the head's dashboard", poll=1)
    except BaseException:
        kill_tree(process)
        raise
    return process, address


def search_driver(space: Path, name: str, store: Path | str, log: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m search run`` as a child process, as a user starts it (its own local Ray unless told otherwise)."""
    return subprocess.Popen(
        [sys.executable, "-m", "search", "run", str(space), "--name", name, "--store", str(store), *extra],
        cwd=ROOT, env=child_env(**(env or {})), stdout=open(log, "a"), stderr=subprocess.STDOUT,
    )  # fmt: skip
