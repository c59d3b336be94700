"""``python -m search doctor --store URI [--address ADDR] [--space FILE]``: what a long search on a cluster needs,
checked in a minute before it starts, each failure one line saying what is wrong and where.

A search on a cluster writes its store from every node: the trials' ledger rows and stage results from their Train
workers, Tune's state and the checkpoints from Ray's storage. A node that cannot reach the store (no endpoint or
keys in the environment its raylet was started with, no route to the server) fails only once a trial lands on it,
hours in. So this checks, from the driver and from a task pinned to every alive node: a file written to the store
reads back and is removed, and the store's create-if-absent (which stage sharing relies on) refuses a second
create; then that the cluster offers the ``TRAIN_DRIVER`` resource trial drivers take; then how many trials of the
space's resources (workers × CPUs and GPUs) the nodes fit at once. Prints one line per check (``ok`` or
``FAIL``); exit 0 when all pass, 1 when one fails, 2 for a store it cannot open.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from results.store import Store, one_line
from search.space import Space
from search.tune import DRIVER_RESOURCE
from trainable.stages import StoreObjects

PROBES = "doctor"  # ``<store>/doctor/``: the probe files, each removed once read back
TASK_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Check:
    ok: bool
    line: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.line}"


def probe_store(uri: str) -> str | None:
    """Write, read back and remove a file of the store, and check its create-if-absent; None, or what failed.

    Runs in the driver and in a Ray task on each node: what it reports is what that process's environment reaches.
    """
    where = f"{socket.gethostname()} (pid {os.getpid()})"
    name = f"{PROBES}/{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        store = Store(uri)
        path = f"{store.root}/{name}"
        store.fs.create_dir(f"{store.root}/{PROBES}", recursive=True)
        with store.fs.open_output_stream(path) as out:
            out.write(where.encode())
        with store.fs.open_input_stream(path) as f:
            if f.read() != where.encode():
                return f"{where}: {store.uri_of(path)} read back other bytes than were written"
        store.fs.delete_file(path)
        objects = StoreObjects(uri)
        once = f"{objects.root}/{name}-once"
        first, second = objects.create(once, b"1"), objects.create(once, b"2")
        objects.fs.delete_file(once)
        if not first or second:
            return f"{where}: the store's create-if-absent does not hold (first {first}, second {second}): stage results cannot be shared"
    except Exception as exc:  # whatever the filesystem says: no endpoint, no keys, no bucket, no route
        return f"{where}: {one_line(exc)}"
    return None


def _node_probe(uri: str) -> tuple[str, str | None]:
    return socket.gethostname(), probe_store(uri)


def check(uri: str, address: str | None, space: Space | None) -> list[Check]:
    """Every check, in order; stops before Ray when the driver itself cannot use the store."""
    problem = probe_store(uri)
    checks = [Check(problem is None, f"store {uri} from the driver: " + (problem or "written, read back, removed; create-if-absent holds"))]
    if problem:
        return checks
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from search.runner import start_local_ray

    if not ray.is_initialized():
        if address is None and "RAY_ADDRESS" not in os.environ:
            start_local_ray(resources={DRIVER_RESOURCE: 1000}, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    task = ray.remote(num_cpus=0)(_node_probe)
    pending = {
        n["NodeID"]: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(uri)
        for n in nodes
    }  # fmt: skip
    for node in nodes:
        label = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        try:
            host, failed = ray.get(pending[node["NodeID"]], timeout=TASK_TIMEOUT_S)
        except Exception as exc:  # a task that could not start or did not answer
            checks.append(Check(False, f"store from {label}: the probe task failed ({one_line(exc)[:300]})"))
            continue
        checks.append(Check(failed is None, f"store from {label} {host}: " + (failed or "written, read back, removed")))
    drivers = ray.cluster_resources().get(DRIVER_RESOURCE, 0)
    checks.append(Check(drivers > 0, f"resource {DRIVER_RESOURCE}: {drivers:g}" if drivers else
                        f"resource {DRIVER_RESOURCE}: none; start the head with ray start --head --resources='{{\"{DRIVER_RESOURCE}\": 1000}}'"))  # fmt: skip
    checks.append(fit(space, nodes))
    return checks


def fit(space: Space | None, nodes: list[dict[str, Any]]) -> Check:
    """How many trials of the space's resources the nodes hold at once: each node holds whole workers (a
    worker's CPUs and GPUs on one node), and a trial takes ``workers`` of them, wherever they are."""
    res = space.spec.resources if space else None
    workers, cpus, gpus = (res.workers, res.cpus_per_worker, res.gpus_per_worker) if res else (1, 1.0, 0.0)
    per_node = []
    for node in nodes:
        have = node["Resources"]
        slots = [int(have.get("CPU", 0) // cpus)] + ([int(have.get("GPU", 0) // gpus)] if gpus else [])
        per_node.append(min(slots))
    trials = sum(per_node) // workers
    total = {k: sum(n["Resources"].get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
    need = f"a trial of {workers} worker(s) x {cpus:g} CPU" + (f" + {gpus:g} GPU" if gpus else "") + (f" ({space.path})" if space else " (the default)")
    line = f"{need}: {trials} at once on {len(nodes)} node(s) with {total['CPU']:g} CPU, {total['GPU']:g} GPU (workers per node: {per_node})"
    return Check(trials >= 1, line if trials else line + "; use --workers, --cpus-per-worker, --gpus-per-worker or bigger nodes")


def main(uri: str, address: str | None, space: Space | None) -> int:
    for item in (results := check(uri, address, space)):
        print(item, flush=True)
    return 0 if all(c.ok for c in results) else 1
