"""Seed-aware ASHA and synchronous halving in real searches: Ray Tune, Ray Train trials, the Parquet ledger."""

from __future__ import annotations

import math
from pathlib import Path

from results.report import seed_table
from results.store import Store
from results.tables import read
from search.space import load

from conftest import tiny_config, write_space


def grouped_space(
    tmp_path: Path, data: Path, name: str, scheduler: dict, seeds: list[int], grid: list[float], epochs: int, max_concurrent: int = 2
) -> Path:
    base = {**tiny_config(data), "epochs": epochs}
    base.pop("threshold", None)
    return write_space(
        tmp_path / f"{name}.yaml", name=name, metric="mask_rate_primary", base=base,
        space={"threshold": {"grid": grid}}, seeds=seeds, scheduler=scheduler,
        resources={"workers": 1, "cpus_per_worker": 1}, max_concurrent=max_concurrent,
    )  # fmt: skip


def test_seeds_together_stop_a_configuration_as_a_whole_and_resume_from_the_ledger(ray_local: str, tiny_dataset: Path, tmp_path: Path) -> None:
    """threshold 0 passes every unlabeled clip (mask rate 1), threshold 1 none (0): the rung at epoch 2 stops
    threshold 1 on every seed. ``max_concurrent: 1`` lets one configuration be live at a time, in grid order, so
    threshold 0 always reaches the rung first (an asynchronous rung passes whoever arrives first); its three
    trials share the two CPUs, so its first two seeds reach the rung while the third has not started: they wait
    (paused, their processes ended) and continue from their Train checkpoints once the third has caught up.
    Then the search is extended by a seed under the same name."""
    from search.runner import run

    scheduler = {"type": "asha", "grace_period": 2, "reduction_factor": 2, "seeds": "together"}
    store = Store(tmp_path / "store")
    path = grouped_space(tmp_path, tiny_dataset, "together", scheduler, [0, 1, 2], [0.0, 1.0], epochs=3, max_concurrent=1)
    search_id = run(load(path), store, name="together")

    trials = read(store, "trials", search_id).to_pylist()
    assert len(trials) == 6
    kept = [t for t in trials if t["threshold"] == 0.0]
    cut = [t for t in trials if t["threshold"] == 1.0]
    assert all(t["status"] == "completed" and t["epochs_run"] == 3 for t in kept), kept
    assert all(t["status"] == "stopped" for t in cut), cut
    # judged on the rung at epoch 2, all seeds at once: none of them trained to the end
    assert all(t["stopped_at_epoch"] == 2 and t["final_mask_rate_primary"] == 0.0 for t in cut), cut
    epochs = read(store, "epochs", search_id).to_pylist()
    restarted = [e for e in epochs if e["epoch"] > 1 and not math.isnan(e["setup_s"])]
    assert restarted, "no trial waited at the rung and continued from its checkpoint"
    for t in trials:
        rows = sorted(e["epoch"] for e in epochs if e["trial_id"] == t["trial_id"])
        assert rows == list(range(1, t["epochs_run"] + 1)), (t["trial_id"], rows)  # one row per epoch, none lost

    # Resume with one more seed: the ledger's configurations are replayed, nothing that ended runs again; the
    # stopped configuration's new seed is stopped with it, the kept one's new seed runs to the end.
    before = {(t["trial_id"], t["epochs_run"], t["status"]) for t in trials}
    path = grouped_space(tmp_path, tiny_dataset, "together", scheduler, [0, 1, 2, 3], [0.0, 1.0], epochs=3, max_concurrent=1)
    run(load(path), store, name="together", revise=True)  # one more seed: the search's next revision
    trials = read(store, "trials", search_id).to_pylist()
    assert len(trials) == 8 and before <= {(t["trial_id"], t["epochs_run"], t["status"]) for t in trials}
    new = {t["threshold"]: t for t in trials if t["seed"] == 3}
    assert new[0.0]["status"] == "completed" and new[0.0]["epochs_run"] == 3
    assert new[1.0]["status"] == "stopped" and new[1.0]["epochs_run"] <= 2
    assert sorted((t["threshold"], t["seed"]) for t in trials) == sorted((th, s) for th in (0.0, 1.0) for s in range(4))


def test_halving_prints_the_same_table_on_every_run(ray_local: str, tiny_dataset: Path, tmp_path: Path) -> None:
    """Three thresholds, one seed, two trials at a time: the rung at epoch 1 keeps the best of them by its mask
    rate (threshold 0 passes every clip), ties to the configuration proposed first, the others stop. The same
    space run twice gives the same table."""
    from search.runner import run

    scheduler = {"type": "halving", "grace_period": 1, "reduction_factor": 2}
    tables = []
    for name in ("halving-a", "halving-b"):
        store = Store(tmp_path / name)
        path = grouped_space(tmp_path, tiny_dataset, name, scheduler, [0], [0.0, 0.9, 1.0], epochs=2)
        search_id = run(load(path), store, name=name)
        trials = read(store, "trials", search_id).to_pylist()
        assert sorted((t["threshold"], t["status"]) for t in trials) == [(0.0, "completed"), (0.9, "stopped"), (1.0, "stopped")]
        tables.append(seed_table(store, name, "mask_rate_primary").splitlines()[1:])  # the first line names the search
        tables[-1].append(sorted((t["threshold"], t["status"]) for t in trials))
    assert tables[0] == tables[1]


def test_seeds_together_resumed_mid_run_judges_with_the_ledgers_epochs(tmp_path: Path) -> None:
    """A killed search: threshold 0 ended on both seeds (55 at epoch 1 on average); threshold 1 had seed 0 at
    epoch 1 (5.0, still running) and seed 1 not started. Resumed, seed 1's first report (10.0) completes the
    configuration's rung with the ledger's 5.0: mean 7.5, below the rung's cut-off, so the configuration stops,
    seed 0's resuming trial with it."""
    from types import SimpleNamespace

    from search.resume import Earlier, plan
    from search.tune import scheduler

    base = tiny_config(tmp_path, epochs=4)
    base.pop("threshold", None)
    path = write_space(
        tmp_path / "t.yaml", name="t", base=base, space={"threshold": {"grid": [0.0, 1.0]}}, seeds=[0, 1],
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2, "seeds": "together"},
    )  # fmt: skip
    space = load(path)
    row = {**space.base, "seed": 0}
    earlier = Earlier(
        search={"search_id": "t"},
        trials=[{**row, "trial_id": "a", "threshold": 0.0, "status": "completed"},
                {**row, "trial_id": "b", "threshold": 0.0, "seed": 1, "status": "completed"},
                {**row, "trial_id": "c", "threshold": 1.0, "status": "running"}],
        curves={"a": {1: 50.0, 2: 55.0}, "b": {1: 60.0, 2: 65.0}, "c": {1: 5.0}},
    )  # fmt: skip
    todo = plan(space, earlier)
    sched = scheduler(space, todo, earlier)
    sched.set_search_properties("top1", "max")
    stopped = []
    controller = SimpleNamespace(stop_trial=stopped.append, get_trials=lambda: [resuming, new])
    resuming = SimpleNamespace(trial_id="t1", config={**row, "threshold": 1.0, "seed": 0}, status="RUNNING")
    new = SimpleNamespace(trial_id="t2", config={**row, "threshold": 1.0, "seed": 1}, status="RUNNING")
    sched.on_trial_add(controller, resuming)
    sched.on_trial_add(controller, new)
    assert dict(sched._brackets[0]._rungs)[1] == {next(iter(sched._order)): 55.0}  # threshold 0's mean, replayed
    assert sched.on_trial_result(controller, new, {"epoch": 1, "top1": 10.0}) == "STOP"
    assert stopped == [resuming]
