"""Where a trial's time goes outside its epochs, read from the Parquet tables of a real search.

Runs a search (by default the README's demo, ``spaces/demo.yaml``, on a local Ray instance) into a fresh
store, or reads one that ran already (``--store``, ``--search``), and splits every trial's wall time:

- ``to fit``: from Tune starting the trial to its function calling ``TorchTrainer.fit`` (Tune placing the
  trial, its process starting, that process's imports);
- ``startup``: from ``fit`` to the worker's first line (Train controller, worker process, process group;
  the epochs table's ``startup_s``);
- ``setup``: from there to the first step (the loop's imports, dataset index, models: ``setup_s``);
- ``reports``: each epoch's checkpoint, report and ledger row (gaps between consecutive rows beyond the
  epoch's own time; the first epoch's is taken as the median of the others);
- ``teardown``: from the last row to Tune ending the trial (workers, controller, placement group, Tune).

``epochs`` is the sum of the epochs' ``epoch_time_s`` (training and test). Then the whole search: its wall
time against the epochs' time divided by how many trials ran at once. Then, on the same Ray instance, the
floor: as many trials whose workers do nothing but report once, with the same trainer as the search's trials
(``search.backend.trial_trainer``), resources, concurrency and Tune settings (``--floor 0`` skips it): what any
trial here costs before its first line of training code runs, and in all; and as many again with Ray's own
``TorchTrainer``, whose module imports torch in the trial's process and its Train controller too.

    python bench/trial_overhead.py                       # the demo, into a temporary store (~5 min here)
    python bench/trial_overhead.py --store S              # the demo, kept in S
    python bench/trial_overhead.py --store S --search ID  # a search that ran already

The floor's trials are timed as the search's are: from Tune starting the trial to Tune ending it (the trials
table's ``wall_s`` is the same span), so ``fixed_s`` (a demo trial's wall − Σ epoch_time_s) and ``floor_s`` (a no-op
trial's wall) compare like for like; ``--ray-env KEY=VALUE`` sets Ray settings for both, to try what lowers the floor.

Goal (issue 25): median ``setup_s`` ≤ 2 s and median fixed cost ≤ floor + 3 s. The last line is
``setup_s S fixed_s F floor_s P torch_trainer_floor_s T`` (medians, seconds), numbers only there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.store import Store  # noqa: E402
from results.tables import connect  # noqa: E402

PARTS = ("to fit", "startup", "setup", "reports", "teardown")


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def breakdown(store: Store, search_id: str) -> tuple[list[dict[str, float | str]], dict[str, float]]:
    """Per trial: wall, epochs, overhead and its parts; and the search's wall and concurrency-adjusted epochs."""
    con = connect(store, search_id)
    trials = con.sql("SELECT trial_id, status, wall_s, started_at, ended_at FROM trials ORDER BY started_at").fetchall()
    epochs: dict[str, list[tuple]] = {}
    for row in con.sql(
        "SELECT trial_id, epoch, epoch_time_s, reported_at, startup_s, setup_s FROM epochs ORDER BY trial_id, epoch"
    ).fetchall():
        epochs.setdefault(row[0], []).append(row[1:])
    out: list[dict[str, float | str]] = []
    for trial_id, status, wall, started_at, ended_at in trials:
        rows = epochs.get(trial_id, [])
        if not rows or ended_at is None:
            continue
        times = [r[1] for r in rows]
        reported = [_seconds(r[2]) for r in rows]
        gaps = [b - a - t for a, b, t in zip(reported, reported[1:], times[1:])]
        first_gap = statistics.median(gaps) if gaps else 0.0
        startup, setup = rows[0][3], rows[0][4]
        to_first_step = reported[0] - times[0] - first_gap - _seconds(started_at)
        out.append({
            "trial": trial_id, "status": status, "epochs_run": len(rows), "wall": wall, "epochs": sum(times),
            "overhead": wall - sum(times), "to fit": to_first_step - startup - setup, "startup": startup,
            "setup": setup, "reports": first_gap + sum(gaps), "teardown": _seconds(ended_at) - reported[-1],
        })  # fmt: skip
    search = con.sql("SELECT started_at, ended_at FROM searches").fetchall()[0]
    concurrency = _concurrency([(_seconds(t[3]), _seconds(t[4])) for t in trials if t[4] is not None])
    total = {
        "wall": _seconds(search[1]) - _seconds(search[0]),
        "epochs": sum(float(r["epochs"]) for r in out),
        "concurrency": concurrency,
    }
    return out, total


def _concurrency(spans: list[tuple[float, float]]) -> int:
    """The most trials that ran at once (what the search's ``max_concurrent`` allowed)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def run_demo(store: Store, space_file: str, overrides: list[str]) -> str:
    from search.runner import run
    from search.space import load, parse_overrides

    return run(load(space_file, parse_overrides(overrides)), store)


def _report_once(config: dict) -> None:
    """The floor's worker: its first line, then one report, of its one epoch."""
    import ray.train

    ray.train.report({"epoch": 1, "startup_s": time.time() - config["fit_started"]})


def _walls() -> object:
    """A Tune callback timing each trial from its start to its end, as ``results.callback`` times ``wall_s``."""
    from ray.tune import Callback

    class Walls(Callback):
        def __init__(self) -> None:
            self.started: dict[str, float] = {}
            self.walls: list[float] = []

        def on_trial_start(self, iteration: int, trials: list, trial: object, **info: object) -> None:
            self.started[trial.trial_id] = time.monotonic()

        def on_trial_complete(self, iteration: int, trials: list, trial: object, **info: object) -> None:
            self.walls.append(time.monotonic() - self.started.pop(trial.trial_id))

    return Walls()


def _floor_trial(config: dict, storage: str, trainer: str) -> None:
    """The floor's trial: what ``search.trial.run_trial`` does, with a worker that does nothing, through the
    trials' own trainer (``trainer`` "trial") or Ray's ``TorchTrainer`` ("torch")."""
    import ray.train
    from ray import tune

    from search.trial import TrialReports, TuneReport, report_epochs

    started = time.time()
    trial_id = tune.get_context().get_trial_id()
    reports = TrialReports.remote(trial_id)
    if trainer == "torch":
        from ray.train.torch import TorchTrainer as make
    else:
        from search.backend import trial_trainer as make
    trainer = make(
        _report_once,
        train_loop_config={"fit_started": started},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=f"floor-{trial_id}", storage_path=storage, callbacks=[TuneReport(reports)]),
    )
    report_epochs(trainer, reports, last_epoch=1)
    tune.report({"fit_s": time.time() - started})


def floor(trials: int, concurrent: int, storage: str, trainer: str) -> tuple[float, float, float]:
    """Medians over ``trials`` no-op trials of ``trainer`` (``_floor_trial``) of (fit → the worker's first line,
    the whole fit, the trial's wall)."""
    from ray import tune

    from search.tune import DRIVER_RESOURCE, DRIVER_SHARE

    walls = _walls()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_floor_trial, storage=storage, trainer=trainer), {DRIVER_RESOURCE: DRIVER_SHARE}),
        param_space={"i": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(storage_path=storage, name=f"floor-{trainer}", verbose=0, callbacks=[walls]),
    )
    frames = [r.metrics_dataframe for r in tuner.fit() if r.error is None]  # each trial's two reports
    startup = [float(f["startup_s"].dropna().iloc[0]) for f in frames]
    fit = [float(f["fit_s"].dropna().iloc[0]) for f in frames]
    return statistics.median(startup), statistics.median(fit), statistics.median(walls.walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "spaces" / "demo.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base-config value")
    parser.add_argument("--store", help="where the search runs (default: a temporary folder), or ran already")
    parser.add_argument("--search", help="a search id in --store to read, instead of running one")
    parser.add_argument("--floor", type=int, default=6, help="no-op trials to time (0: none)")
    parser.add_argument("--ray-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for Ray, set before it starts (e.g. RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2)")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    for pair in args.ray_env:
        key, _, value = pair.partition("=")
        os.environ[key] = value
    with tempfile.TemporaryDirectory() as folder:
        store = Store(args.store or folder)
        search_id = args.search or run_demo(store, args.space, args.set)
        trials, total = breakdown(store, search_id)
        if args.floor:
            import ray

            from search.runner import start_local_ray
            from search.tune import DRIVER_RESOURCE

            if not ray.is_initialized():  # else the demo's instance, as it was set up
                os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
                start_local_ray(resources={DRIVER_RESOURCE: 1000})
            floors = {t: floor(args.floor, total["concurrency"], f"{folder}/floor", t) for t in ("trial", "torch")}
    print(f"\nsearch {search_id}: where each trial's wall time went (seconds)")
    columns = ("wall", "epochs", "overhead", *PARTS)
    print(f"{'trial':10s} {'status':9s} {'ep':>3s} " + " ".join(f"{c:>8s}" for c in columns))
    for t in trials:
        print(f"{str(t['trial'])[:10]:10s} {str(t['status']):9s} {t['epochs_run']:3d} " + _cells(t, columns))
    medians = {c: statistics.median(float(t[c]) for t in trials) for c in columns}
    print(f"{'median':24s} " + _cells(medians, columns))
    ideal = total["epochs"] / total["concurrency"]
    ratio = total["wall"] / ideal
    print(f"search wall {total['wall']:.1f} s; epochs {total['epochs']:.1f} s, "
          f"{total['concurrency']} at a time: {ideal:.1f} s; ratio {ratio:.2f}")  # fmt: skip
    last = f"setup_s {medians['setup']:.1f} fixed_s {medians['overhead']:.1f}"
    if args.floor:
        for trainer, name in (("trial", "the trials' trainer"), ("torch", "Ray's TorchTrainer")):
            floor_startup, floor_fit, floor_wall = floors[trainer]
            print(f"floor, {args.floor} no-op trials of {name} {total['concurrency']} at a time: fit to the worker's first "
                  f"line {floor_startup:.1f} s (ours: startup {medians['startup']:.1f} s), whole fit {floor_fit:.1f} s, "
                  f"trial wall {floor_wall:.1f} s (ours, less the epochs: {medians['overhead']:.1f} s)")  # fmt: skip
        last += f" floor_s {floors['trial'][2]:.1f} torch_trainer_floor_s {floors['torch'][2]:.1f}"
    print(last)


def _cells(values: dict, columns: tuple[str, ...]) -> str:
    return " ".join(f"{float(values[c]):8.1f}" for c in columns)

if __name__ == "__main__":
    main()
