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

import pytest

from results.store import Store
from results.tables import read
from search.space import load

from processes import kill_tree, search_driver, wait_for
from conftest import EPOCHS, check_tables, epochs_of, grid_space, second_node, two_nodes, worker_on



def test_driver_killed_at_an_epoch_boundary_and_mid_epoch_resumes_from_the_ledger(tiny_dataset: Path, tmp_path: Path) -> None:
    """SIGKILL of the driver's whole process tree (its local Ray included), twice: the same command resumes;
    then the search is resumed to its end with the grid extended by one value under the same name: the killed
    trials go on from their checkpoints and only the new cell starts afresh. (A finished search extended by a
    configuration or a seed: tests/test_dashboards.py, tests/test_schedulers.py.)"""
    space = grid_space(tmp_path, tiny_dataset, [0.0, 0.5], max_concurrent=2)
    store, name, log = Store(tmp_path / "store"), "crash", tmp_path / "driver.log"

    # 1. Killed right after an epoch's row is written (an epoch boundary).
    driver = search_driver(space, name, tmp_path / "store", log)
    wait_for(lambda: any(e["epoch"] >= 2 for e in epochs_of(store, name)), 300, "an epoch-2 row")
    kill_tree(driver)
    first = epochs_of(store, name)
    trial_ids = {e["trial_id"] for e in first}
    assert {t["status"] for t in read(store, "trials", name).to_pylist()} == {"running"}  # nobody said goodbye

    # 2. Resumed by the same command, then killed between two reports (an epoch takes a few seconds; we wait a
    # fraction of one).
    driver = search_driver(space, name, tmp_path / "store", log)
    wait_for(lambda: len(epochs_of(store, name)) > len(first), 300, "a row of the resumed search")
    time.sleep(1.0)
    kill_tree(driver)
    second = epochs_of(store, name)
    started = read(store, "trials", name).to_pylist()  # what the ledger says was started, and ended
    pinned = {t["trial_id"] for t in started}
    ended = sum(t["status"] != "running" for t in started)

    # 3. Resumed to the end with one more grid value (an edited space: its next revision).
    wider = grid_space(tmp_path, tiny_dataset, [0.0, 0.5, 1.0], max_concurrent=2)
    driver = search_driver(wider, name, tmp_path / "store", log, "--revise")
    assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
    trials, rows = check_tables(store, name, trials=3)
    assert sorted(t["threshold"] for t in trials) == [0.0, 0.5, 1.0]
    assert {t["trial_id"] for t in trials} >= trial_ids | pinned  # the same trials went on, under their ids
    resumed = len(pinned) - ended
    assert f"{ended} trial(s) ended and are kept, {resumed} resume from their checkpoints, {3 - ended} to run in all" in log.read_text()
    # Epochs finished before a kill were not run again: their rows are the ones first written.
    for before in (first, second):
        for old in before:
            [now] = [e for e in rows if (e["trial_id"], e["epoch"]) == (old["trial_id"], old["epoch"])]
            newest = max(e["epoch"] for e in before if e["trial_id"] == old["trial_id"])
            if old["epoch"] < newest:  # the newest row may be appended again by the run resuming from it
                assert now["reported_at"] == old["reported_at"], (old, now)
    new = [t["trial_id"] for t in trials if t["threshold"] == 1.0]
    assert new and sorted(e["epoch"] for e in rows if e["trial_id"] == new[0]) == list(range(1, EPOCHS + 1))


def test_driver_killed_mid_epoch_on_s3_resumes_every_row_once(s3_store: Store, tiny_dataset: Path, tmp_path: Path) -> None:
    """On an S3 store (the ledger, Tune's state, the Train checkpoints and the lease all there): SIGKILL of the
    driver's whole tree inside an epoch, then the same command resumes the search to the end, every row once."""
    space = grid_space(tmp_path, tiny_dataset, [0.5])
    store, name, log = s3_store, "crash-s3", tmp_path / "driver.log"
    driver = search_driver(space, name, store.uri, log)
    wait_for(lambda: epochs_of(store, name), 300, "an epoch-1 row")
    time.sleep(0.5)  # inside epoch 2
    kill_tree(driver)
    before = epochs_of(store, name)
    assert store.fs.get_file_info(f"{store.root}/leases/{name}.json").size  # the killed driver's lease is left
    driver = search_driver(space, name, store.uri, log)
    assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
    trials, rows = check_tables(store, name, trials=1)
    assert {e["trial_id"] for e in before} == {t["trial_id"] for t in trials}  # the same trial went on
    assert all(e["checkpoint_path"].startswith(f"{store.uri}/train/{name}/") for e in rows if e["checkpoint_path"])


def _train_worker_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], timeout=30)
    return [a.pid for a in actors if a.pid]


@pytest.mark.parametrize(("max_failures", "where"), [(1, "folder"), (0, "folder"), (1, "s3")])
def test_killed_train_worker_resumes_from_its_checkpoint(
    ray_local: str, tiny_dataset: Path, tmp_path: Path, max_failures: int, where: str, request: pytest.FixtureRequest
) -> None:
    """SIGKILL of the trial's Train worker inside epoch 2. With ``max_failures: 1`` Tune retries the trial and
    Train resumes from epoch 1's checkpoint (on S3 as on a folder: the store's own ``train/``); with 0 the trial
    ends ``errored``, and running the search again under its name resumes it from that checkpoint."""
    import psutil

    from search.runner import run

    space = load(grid_space(tmp_path, tiny_dataset, [0.5], max_failures=max_failures))
    store = Store(tmp_path / "store") if where == "folder" else request.getfixturevalue("s3_store")
    name = f"worker-{max_failures}"
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
    [checkpoint] = [e["checkpoint_path"] for e in rows if e["epoch"] == 1 and e["checkpoint_path"]]
    assert checkpoint.startswith(f"{store.uri}/train/{name}/")  # on the store, S3 included


def test_a_killed_node_s_trial_finishes_on_another(tiny_dataset: Path, tmp_path: Path) -> None:
    """A loopback cluster of two nodes (a head and a second raylet, one CPU each); the second node is killed
    while its trial's worker runs there; Tune retries the trial on the head, from its checkpoint."""
    with two_nodes(tmp_path) as (address, node):
        space = grid_space(tmp_path, tiny_dataset, [0.0, 0.5], max_concurrent=2, max_failures=1)
        store, name, log = Store(tmp_path / "store"), "nodes", tmp_path / "driver.log"
        driver = search_driver(space, name, tmp_path / "store", log, "--address", address["gcs"])
        node_id = second_node(address["dashboard"])
        wait_for(lambda: worker_on(address["dashboard"], node_id), 300, "a Train worker on the second node", poll=1)
        wait_for(lambda: epochs_of(store, name), 300, "a first row")
        kill_tree(node)
        assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
        check_tables(store, name, trials=2)
