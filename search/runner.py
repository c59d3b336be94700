"""Running a search: join or start Ray, run the Tune experiment, keep the Parquet tables, print the result."""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from importlib import metadata
from typing import Any

from search.callback import ResultsCallback
from results.ledger import now
from results.report import seed_table, show
from results.store import Store
from search.lease import Lease
from search.preflight import is_local, preflight, provenance
from search.resume import Earlier, plan
from search.space import Space
from search.tune import DRIVER_RESOURCE, build_tuner
from trainable.config import TrainConfig
from trainable.data.synthetic import ensure_synthetic

log = logging.getLogger(__name__)

PACKAGES = ("ray", "torch", "torchvision", "pytorchvideo", "timm", "optuna", "pyarrow", "av", "torchcodec")


class ClusterError(RuntimeError):
    """The Ray cluster cannot run trials as this service schedules them."""


def _trials_that_fit(space: Space) -> int:
    """How many trials this machine runs at once; on a local instance nothing autoscales, so a trial
    needing more than the machine has would wait forever: that is an error here, before any trial."""
    import ray

    res = space.spec.resources
    have = ray.cluster_resources()
    need = {"CPU": res.workers * res.cpus_per_worker, "GPU": res.workers * res.gpus_per_worker}
    fits = min(int(have.get(k, 0) // v) for k, v in need.items() if v > 0)
    if fits < 1:
        raise ClusterError(
            f"a trial needs {res.workers} worker(s) x {res.cpus_per_worker:g} CPU + {res.gpus_per_worker:g} GPU, "
            f"this machine has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU; "
            "use --workers, --cpus-per-worker and --gpus-per-worker"
        )
    return fits


DASHBOARD_PORT = 8265  # Ray's default; another free port when something already listens there


def _dashboard_port() -> int:
    for port in (DASHBOARD_PORT, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise ClusterError("no free port for the Ray dashboard")


def start_local_ray(**init_kwargs: Any) -> str:
    """Start a new Ray instance on this machine, never joining one that runs already; return its dashboard URL.

    Ray Train's placement-group cleaner finds its cluster's state API through ``RAY_API_SERVER_ADDRESS``, or
    else through ``/tmp/ray/ray_current_cluster``, which names the head of the last ``ray start`` on this
    machine: another cluster, maybe long gone. Asking it the wrong cluster, the cleaner gives up, and every
    trial that ends leaves its workers' CPUs reserved, so the next trials wait forever. Every process of the
    instance inherits this process's environment, so setting the variable here, before Ray starts, points
    them all at this instance's own dashboard. Train's preemption watcher is turned off the same way (unless
    the environment says otherwise): on one machine it is a process per trial that has nothing to watch.
    """
    import ray

    port = _dashboard_port()
    url = f"http://127.0.0.1:{port}"
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    # Train's preemption watcher, an actor per trial, waits for a node to be drained: one machine never is.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, **init_kwargs)
    return url


def init_ray(address: str | None, space: Space) -> int | None:
    """Start a local Ray instance, or join ``address`` (``auto`` or ``ray://…``; inside a job, the job's cluster).

    Returns how many trials may run at once: the space's ``max_concurrent``, or on a local instance, when
    the space sets none, as many as the machine fits (more would only wait, their clocks running, and
    Optuna would propose them all before learning from any). On a cluster, unset means unlimited: waiting
    trials are what makes the autoscaler add nodes.
    A local instance gets the ``TRAIN_DRIVER`` resource that trial drivers use instead of CPUs; a joined
    cluster must offer it (``cluster.yaml`` does on its head node), or no trial could ever start.
    """
    import ray

    if ray.is_initialized():  # this process already joined a cluster (a test, a notebook): use it
        pass
    elif is_local(address):
        # Train forwards reports to Tune at this polling interval (2 s by default).
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        url = start_local_ray(resources={DRIVER_RESOURCE: 1000})
        log.info("Ray dashboard: %s", url)
        return space.spec.max_concurrent or _trials_that_fit(space)
    else:
        ray.init(address=address)
    if ray.cluster_resources().get(DRIVER_RESOURCE, 0) <= 0:
        raise ClusterError(
            f"the Ray cluster offers no '{DRIVER_RESOURCE}' resource, which every trial's driver needs; start the "
            f"head with: ray start --head --resources='{{\"{DRIVER_RESOURCE}\": 1000}}' (cluster.yaml does this)"
        )
    return space.spec.max_concurrent


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def search_row(space: Space, search_id: str, store: Store, address: str | None, earlier: Earlier, revision: int = 1) -> dict[str, Any]:
    """The ``searches`` row: what ran, from which file and code, where, as which revision; a resumed search keeps its
    start time."""
    return {
        "search_id": search_id,
        "name": space.name,
        "space_file": space.path,
        **provenance(space),
        "space_hash": space.hash,
        "metric": space.spec.metric,
        "mode": space.spec.mode,
        "planned_trials": space.num_trials,
        "revision": revision,
        "status": "running",
        "started_at": (earlier.search or {}).get("started_at") or now(),
        "resumed_at": now() if earlier.search else None,
        "ended_at": None,
        "versions": json.dumps(_versions(), sort_keys=True),
        "git_commit": _git_commit(),
        "store": store.uri,
        "ray_address": address or os.environ.get("RAY_ADDRESS") or "local",
    }


def run_row(search: dict[str, Any]) -> dict[str, Any]:
    """The ``runs`` row of this run of the search: its provenance, who ran it where, when; never replaced."""
    fields = ("search_id", "revision", "space_file", "space_yaml", "space_hash", "overrides", "seeds", "resources",
              "git_commit", "versions", "store", "ray_address")  # fmt: skip
    return {
        **{k: search[k] for k in fields},
        "run_id": f"{now()}-{uuid.uuid4().hex[:8]}",
        "started_at": now(),
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": " ".join(sys.argv),
    }


def run(space: Space, store: Store, address: str | None = None, name: str | None = None, revise: bool = False) -> str:
    """Run ``space``; when ``name`` names a search the store has, continue it (see ``search.resume``); with ``revise``
    even when the space, overrides, seeds or resources differ from the search's, as its next revision.

    Returns the search id. The search's lease (``search.lease``) is held from before anything is read or written
    until the end, so a second driver of the same search is refused, not run beside this one.
    """
    search_id, revision = preflight(space, store, name, address, revise)
    with Lease(store, search_id):
        _run(space, store, address, search_id, revision)
    return search_id


def _run(space: Space, store: Store, address: str | None, search_id: str, revision: int) -> None:
    earlier = Earlier.load(store, search_id, space.spec.metric)
    todo = plan(space, earlier)
    if earlier.search:
        log.info(
            "search %s is in %s: %d trial(s) ended and are kept, %d resume from their checkpoints, %d to run in all",
            search_id, store.uri, len(todo.ended), len(todo.pins.ids), todo.num_trials,
        )  # fmt: skip
    row = search_row(space, search_id, store, address, earlier, revision)
    callback = ResultsCallback(store, row, earlier.trials, todo.pins, run_row(row))
    if todo.num_trials:
        config = TrainConfig.parse(space.base)
        if is_local(address) and config.dataset == "synthetic":  # generated once here, with a progress bar
            ensure_synthetic(config.synthetic_spec(), config.synthetic_root)
        max_concurrent = init_ray(address, space)
        log.info("search %s: %d trials; results in %s", search_id, todo.num_trials, store.uri)
        tuner = build_tuner(space, store, search_id, [callback], max_concurrent, todo, earlier)
        try:
            tuner.fit()
        except KeyboardInterrupt:
            callback.finish("interrupted")
            raise
    else:
        callback.setup()
        callback.finish("completed")
    print(f"\nsearch {search_id}: trials by {space.spec.metric} ({space.spec.mode})")
    print(show(store, search_id))
    print(f"\nconfigurations over seeds, against the best ({space.spec.metric}, {space.spec.mode}):")
    print(seed_table(store, search_id, space.spec.metric))
    print(f"\nParquet tables: {store.uri}/{{searches,trials,epochs,stages,runs}}/search_id={search_id}/")
