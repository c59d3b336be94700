"""Faults, for real: the search's driver, a Train worker and a second node killed with SIGKILL while trials run.

Every process is started by the test and ended by its pid (``processes.kill_tree``); each test then checks
the Parquet tables row by row: one row per (trial, epoch), none lost, none doubled, every trial finished.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from results.store import Store
from results.tables import read
from search.space import load

from processes import get_json, kill_tree, search_driver, start_head, start_node, wait_for
from conftest import tiny_config, tiny_space

EPOCHS = 4


def grid_space(tmp_path: Path, data: Path, thresholds: list[float], **fields: Any) -> Path:
    """Trials long enough to be killed inside an epoch: 4 epochs of 12 steps (about a second each here)."""
    return tiny_space(
        tmp_path, data, space={"threshold": {"grid": thresholds}}, seeds=[0],
        base=tiny_config(data, epochs=EPOCHS, steps_per_epoch=12), **fields,
    )  # fmt: skip


def epochs_of(store: Store, search_id: str) -> list[dict]:
    if not store.parts("epochs", search_id):
        return []
    return read(store, "epochs", search_id).to_pylist()


def check_tables(store: Store, search_id: str, trials: int) -> tuple[list[dict], list[dict]]:
    """The search ended, every trial completed, and its epochs are exactly 1..EPOCHS, both through the views and
    in the raw files the final compaction left (which a user may read with pyarrow)."""
    trial_rows = read(store, "trials", search_id).to_pylist()
    epoch_rows = read(store, "epochs", search_id).to_pylist()
    assert len(trial_rows) == trials
    assert all(t["status"] == "completed" and t["epochs_run"] == EPOCHS for t in trial_rows), trial_rows
    for trial in trial_rows:
        mine = sorted(e["epoch"] for e in epoch_rows if e["trial_id"] == trial["trial_id"])
        assert mine == list(range(1, EPOCHS + 1)), (trial["trial_id"], mine)
    raw = pq.read_table(Path(store.uri) / "epochs").to_pylist()
    raw = [r for r in raw if r["search_id"] == search_id]
    assert sorted((r["trial_id"], r["epoch"]) for r in raw) == sorted((e["trial_id"], e["epoch"]) for e in epoch_rows)
    [search] = read(store, "searches", search_id).to_pylist()
    assert search["status"] == "completed" and search["num_trials"] == trials
    return trial_rows, epoch_rows


def test_driver_killed_at_an_epoch_boundary_and_mid_epoch_resumes_from_the_ledger(tiny_dataset: Path, tmp_path: Path) -> None:
    """SIGKILL of the driver's whole process tree (its local Ray included), twice; the same command resumes.

    Then the grid is extended by one value under the same name: only the new cell runs.
    """
    space = grid_space(tmp_path, tiny_dataset, [0.0, 0.5], max_concurrent=2)
    store, name, log = Store(tmp_path / "store"), "crash", tmp_path / "driver.log"

    # 1. Killed right after an epoch's row is written (an epoch boundary).
    driver = search_driver(space, name, tmp_path / "store", log)
    wait_for(lambda: any(e["epoch"] >= 2 for e in epochs_of(store, name)), 300, "an epoch-2 row")
    kill_tree(driver)
    first = epochs_of(store, name)
    trial_ids = {e["trial_id"] for e in first}
    assert {t["status"] for t in read(store, "trials", name).to_pylist()} == {"running"}  # nobody said goodbye

    # 2. Resumed, then killed between two reports (an epoch takes a few seconds; we wait a fraction of one).
    driver = search_driver(space, name, tmp_path / "store", log)
    wait_for(lambda: len(epochs_of(store, name)) > len(first), 300, "a row of the resumed search")
    time.sleep(1.0)
    kill_tree(driver)
    second = epochs_of(store, name)

    # 3. Resumed to the end.
    driver = search_driver(space, name, tmp_path / "store", log)
    assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
    trials, rows = check_tables(store, name, trials=2)
    assert {t["trial_id"] for t in trials} >= trial_ids  # the same trials went on, under their ids
    # Epochs finished before a kill were not run again: their rows are the ones first written.
    for before in (first, second):
        for old in before:
            [now] = [e for e in rows if (e["trial_id"], e["epoch"]) == (old["trial_id"], old["epoch"])]
            newest = max(e["epoch"] for e in before if e["trial_id"] == old["trial_id"])
            if old["epoch"] < newest:  # the newest row may be appended again by the run resuming from it
                assert now["reported_at"] == old["reported_at"], (old, now)

    # 4. Extended: one more grid value; the two finished cells are kept as they are.
    wider = grid_space(tmp_path, tiny_dataset, [0.0, 0.5, 1.0], max_concurrent=2)
    driver = search_driver(wider, name, tmp_path / "store", log, "--revise")  # an edited space: its next revision
    assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
    extended, extended_rows = check_tables(store, name, trials=3)
    assert sorted(t["threshold"] for t in extended) == [0.0, 0.5, 1.0]
    kept = [e for e in extended_rows if e["trial_id"] in {t["trial_id"] for t in trials}]
    assert sorted(map(str, kept)) == sorted(map(str, rows))
    assert "1 to run in all" in log.read_text()


def _train_worker_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], timeout=30)
    return [a.pid for a in actors if a.pid]


@pytest.mark.parametrize("max_failures", [1, 0])
def test_killed_train_worker_resumes_from_its_checkpoint(ray_local: str, tiny_dataset: Path, tmp_path: Path, max_failures: int) -> None:
    """SIGKILL of the trial's Train worker inside epoch 2. With ``max_failures: 1`` Tune retries the trial and
    Train resumes from epoch 1's checkpoint; with 0 the trial ends ``errored``, and running the search again
    under its name resumes it from that checkpoint."""
    import psutil

    from search.runner import run

    space = load(grid_space(tmp_path, tiny_dataset, [0.5], max_failures=max_failures))
    store, name = Store(tmp_path / "store"), f"worker-{max_failures}"
    killed: dict[str, Any] = {}

    def kill_in_epoch_2() -> None:
        # The worker's pid first, so that the kill follows epoch 1's row at once: the worker goes on into epoch 2
        # as soon as it has reported epoch 1, and an epoch here lasts about a second.
        [pid] = wait_for(_train_worker_pids, 300, "the Train worker")
        wait_for(lambda: epochs_of(store, name), 300, "epoch 1's row", poll=0.05)
        killed["at"] = time.time()
        psutil.Process(pid).send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_in_epoch_2, daemon=True)
    killer.start()
    run(space, store, name=name)
    killer.join(timeout=60)
    assert "at" in killed
    [trial] = read(store, "trials", name).to_pylist()
    if max_failures == 0:
        assert trial["status"] == "errored" and trial["epochs_run"] == 1, trial
        run(space, store, name=name)
    trials, rows = check_tables(store, name, trials=1)
    assert trials[0]["trial_id"] == trial["trial_id"]
    # At most one epoch was computed again: rows written after the kill are the epochs from 2 on, and epoch 1
    # (re-appended from the checkpoint the retry resumed from). Without the checkpoint every epoch would be.
    after = sorted(e["epoch"] for e in rows if e["reported_at"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(killed["at"])))
    assert after in (list(range(2, EPOCHS + 1)), list(range(1, EPOCHS + 1))), after
    assert [e["epoch"] for e in rows if e["epoch"] == 1 and e["checkpoint_path"]] == [1]


def test_a_killed_node_s_trial_finishes_on_another(tiny_dataset: Path, tmp_path: Path) -> None:
    """A loopback cluster of two nodes (a head and a second raylet, one CPU each); the second node is killed
    while its trial's worker runs there; Tune retries the trial on the head, from its checkpoint."""
    head, address = start_head(tmp_path / "head.log", cpus=1)
    try:
        node, _ = start_node(tmp_path / "node.log", head=False, address=address["gcs"], cpus=1)
        try:
            wait_for(lambda: _alive_nodes(address["dashboard"]) == 2, 120, "the second node to join", poll=1)
            space = grid_space(tmp_path, tiny_dataset, [0.0, 0.5], max_concurrent=2, max_failures=1)
            store, name, log = Store(tmp_path / "store"), "nodes", tmp_path / "driver.log"
            driver = search_driver(space, name, tmp_path / "store", log, "--address", address["gcs"])
            node_id = _second_node(address["dashboard"])
            wait_for(lambda: _worker_on(address["dashboard"], node_id), 300, "a Train worker on the second node", poll=1)
            wait_for(lambda: epochs_of(store, name), 300, "a first row")
            kill_tree(node)
            assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
            check_tables(store, name, trials=2)
        finally:
            if node.poll() is None:
                kill_tree(node, signal.SIGTERM)
    finally:
        kill_tree(head, signal.SIGTERM)


def _alive_nodes(dashboard: str) -> int:
    try:
        nodes = get_json(f"{dashboard}/api/v0/nodes?limit=10")["data"]["result"]["result"]
    except OSError:
        return 0
    return sum(n["state"] == "ALIVE" for n in nodes)


def _second_node(dashboard: str) -> str:
    """The id of the node that is not the head."""
    nodes = get_json(f"{dashboard}/api/v0/nodes?limit=10")["data"]["result"]["result"]
    [other] = [n["node_id"] for n in nodes if not n["is_head_node"]]
    return other


def _worker_on(dashboard: str, node_id: str) -> bool:
    actors = get_json(f"{dashboard}/api/v0/actors?limit=1000&detail=true")["data"]["result"]["result"]
    return any(a["class_name"] == "RayTrainWorker" and a["state"] == "ALIVE" and a.get("node_id") == node_id for a in actors)
