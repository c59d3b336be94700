"""``ray job submit`` against a real head node with the dashboard, started and stopped by this test."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from processes import RAY, ROOT, child_env, get_json, kill_tree, start_head
from conftest import tiny_space

@pytest.fixture
def head(tmp_path: Path):
    """``ray start --head --block`` as a child process, ended with the processes it started (by their pids).

    Every port is chosen free, so this head does not collide with the test session's own Ray instance.
    """
    process, address = start_head(tmp_path / "head.log")
    try:
        yield address["dashboard"], child_env()
    finally:
        kill_tree(process, signal.SIGTERM)


def test_ray_job_submit_runs_a_search(head: tuple[str, dict], tiny_dataset: Path, tmp_path: Path) -> None:
    url, env = head
    space = tiny_space(tmp_path, tiny_dataset, space={"threshold": {"grid": [0.0, 0.9]}}, seeds=[0])
    store = tmp_path / "store"
    submit = subprocess.run(
        [
            RAY, "job", "submit", "--address", url, "--submission-id", "job-search", "--working-dir", str(ROOT), "--",
            sys.executable, "-m", "search", "run", str(space), "--store", str(store), "--name", "job-search",
        ],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert submit.returncode == 0, submit.stdout[-12000:] + submit.stderr[-3000:]
    assert "search job-search: trials by top1" in submit.stdout  # the job's own output, streamed back

    jobs = get_json(f"{url}/api/jobs/")
    assert [(j["submission_id"], j["status"]) for j in jobs] == [("job-search", "SUCCEEDED")]
    logs = get_json(f"{url}/api/jobs/job-search/logs")["logs"]
    assert "epoch 2/2" in logs  # per-epoch lines of the Train workers reach `ray job logs`

    trials = pq.read_table(store / "trials").to_pylist()
    epochs = pq.read_table(store / "epochs").to_pylist()
    assert sorted(t["threshold"] for t in trials) == [0.0, 0.9]
    assert all(t["status"] == "completed" for t in trials)
    assert len(epochs) == 4
    groups = get_json(f"{url}/api/v0/placement_groups?limit=100")["data"]["result"]["result"]
    assert all(g["state"] == "REMOVED" for g in groups), groups  # no trial left its workers' resources behind

    # What the dashboard shows of it. No failed task: a trial's function waits for its epochs without a timeout
    # (Ray's TuneReportCallback polled a queue actor, and this search showed ~120 failed `_QueueActor.get`).
    # The one exception is Train's own: its placement-group cleaner ends itself inside its `stop` call, which
    # Ray may list as failed (WORKER_DIED, an exit asked for), depending on timing.
    failed = get_json(f"{url}/api/v0/tasks?filter_keys=state&filter_predicates=%3D&filter_values=FAILED&detail=true&limit=10000")
    failed = failed["data"]["result"]["result"]
    # And Train's autoscaling coordinator, a named detached actor that every trial's controller gets or creates:
    # two controllers starting at once race to create it (Ray's lock is per process), and the loser's creation is
    # listed as failed while the winner's actor lives on, which the test checks.
    coordinator = "AutoscalingCoordinator:_AutoscalingCoordinatorActor.__init__"
    if any(t["name"] == coordinator for t in failed):
        actors = get_json(f"{url}/api/v0/actors?filter_keys=name&filter_predicates=%3D&filter_values=AutoscalingCoordinator&limit=100")
        assert any(a["state"] == "ALIVE" for a in actors["data"]["result"]["result"]), actors
    # A trial's Train controller may also be listed as died in its run call when Tune ends the finished trial's
    # process before the controller's call returns (seen once in CI, every trial completed, as asserted above).
    expected = {("PlacementGroupCleaner.stop", "user request"), (coordinator, ""), ("TrainController.run", "")}
    unexpected = [t for t in failed if not any(t["name"] == name and text in (t.get("error_message") or "") for name, text in expected)]
    assert not unexpected, Counter((t["name"], t["error_type"]) for t in unexpected)
    # Each trial is found by its id: its reports actor's repr (the Actors page) and its workers' log lines.
    actors = get_json(f"{url}/api/v0/actors?detail=true&limit=1000")["data"]["result"]["result"]
    reprs = sorted(a["repr_name"] for a in actors if a["class_name"] == "TrialReports")
    assert reprs == sorted(f"trial {t['trial_id']}" for t in trials)
    assert all(f"train-{t['trial_id']}: epoch 2/2" in logs for t in trials)
