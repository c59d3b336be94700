"""Running a search: join or start Ray, run the Tune experiment, keep the Parquet tables, print the result."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import datetime
from importlib import metadata
from typing import Any

from results.callback import ResultsCallback, now
from results.report import show
from results.store import Store
from search.space import Space
from search.tune import DRIVER_RESOURCE, build_tuner, restore_tuner
from trainable.config import TrainConfig
from trainable.data.synthetic import ensure_synthetic

log = logging.getLogger(__name__)

PACKAGES = ("ray", "torch", "torchvision", "pytorchvideo", "timm", "optuna", "pyarrow", "av")


class ClusterError(RuntimeError):
    """The Ray cluster cannot run trials as this service schedules them."""


def _check_fits(space: Space) -> None:
    """On a local instance nothing autoscales: a trial needing more than the machine has would wait forever."""
    import ray

    res = space.spec.resources
    have = ray.cluster_resources()
    need = {"CPU": res.workers * res.cpus_per_worker, "GPU": res.workers * res.gpus_per_worker}
    short = {k: v for k, v in need.items() if v > have.get(k, 0)}
    if short:
        raise ClusterError(
            f"a trial needs {res.workers} worker(s) x {res.cpus_per_worker:g} CPU + {res.gpus_per_worker:g} GPU, "
            f"this machine has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU; "
            "use --workers, --cpus-per-worker and --gpus-per-worker"
        )


def init_ray(address: str | None, space: Space) -> None:
    """Start a local Ray instance, or join ``address`` (``auto`` or ``ray://…``; inside a job, the job's cluster).

    A local instance gets the ``TRAIN_DRIVER`` resource that trial drivers use instead of CPUs; a joined
    cluster must offer it (``cluster.yaml`` does on its head node), or no trial could ever start.
    """
    import ray

    if ray.is_initialized():  # this process already joined a cluster (a test, a notebook): use it
        pass
    elif address is None and "RAY_ADDRESS" not in os.environ:
        # Train forwards reports to Tune at this polling interval (2 s by default).
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        ray.init(resources={DRIVER_RESOURCE: 1000})
        _check_fits(space)
        return
    else:
        ray.init(address=address)
    if ray.cluster_resources().get(DRIVER_RESOURCE, 0) <= 0:
        raise ClusterError(
            f"the Ray cluster offers no '{DRIVER_RESOURCE}' resource, which every trial's driver needs; start the "
            f"head with: ray start --head --resources='{{\"{DRIVER_RESOURCE}\": 1000}}' (cluster.yaml does this)"
        )


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


def search_row(space: Space, search_id: str, store: Store, address: str | None) -> dict[str, Any]:
    """The ``searches`` row: what ran, from which file and code, where."""
    return {
        "search_id": search_id,
        "name": space.name,
        "space_file": space.path,
        "space_yaml": space.text,
        "space_hash": space.hash,
        "overrides": json.dumps(space.overrides, sort_keys=True),
        "seeds": json.dumps(space.spec.seed_list),
        "metric": space.spec.metric,
        "mode": space.spec.mode,
        "planned_trials": space.num_trials,
        "num_trials": 0,
        "status": "running",
        "started_at": now(),
        "ended_at": None,
        "versions": json.dumps(_versions(), sort_keys=True),
        "git_commit": _git_commit(),
        "store": store.uri,
        "ray_address": address or os.environ.get("RAY_ADDRESS") or "local",
    }


def run(space: Space, store: Store, address: str | None = None, name: str | None = None) -> str:
    """Run (or, when ``name`` names an interrupted search, resume) ``space``; return the search id."""
    from ray import tune

    if address is None and "RAY_ADDRESS" not in os.environ:  # a local run reads the dataset from this machine
        config = TrainConfig.parse(space.base)
        config.check_paths()
        if config.dataset == "synthetic":  # generate it once here, with a progress bar, before trials start
            ensure_synthetic(config.synthetic_spec(), config.synthetic_root)
    search_id = name or f"{space.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    tune_storage = f"{store.uri}/tune"
    train_storage = f"{store.uri}/train/{search_id}"
    init_ray(address, space)
    experiment = f"{tune_storage}/{search_id}"
    if tune.Tuner.can_restore(experiment):
        log.info("resuming search %s from %s", search_id, experiment)
        tuner = restore_tuner(space, experiment, train_storage)
        callback = None
    else:
        callback = ResultsCallback(store, search_row(space, search_id, store, address), space.spec.metric, space.spec.mode)
        tuner = build_tuner(space, tune_storage, train_storage, search_id, [callback])
    log.info("search %s: %d trials; results in %s", search_id, space.num_trials, store.uri)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        if callback is not None:
            callback.finish("interrupted")
        raise
    print(f"\nsearch {search_id}: trials by {space.spec.metric} ({space.spec.mode})")
    print(show(store, search_id))
    print(f"\nParquet tables: {store.uri}/{{searches,trials,epochs}}/{search_id}.parquet")
    return search_id
