"""``ray job submit`` against a real head node with the dashboard, started and stopped by this test."""

from __future__ import annotations

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
        kill_tree(process)


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

    # What the dashboard shows of it. No task raised: a trial's function waits for its epochs without a timeout
    # (Ray's TuneReportCallback polled a queue actor with one, and this search showed ~120 failed
    # `_QueueActor.get`, each a raised queue.Empty, TASK_EXECUTION_EXCEPTION). Ray lists a task as failed too when its process is ended
    # while it runs (WORKER_DIED, ACTOR_DIED): Tune ends a finished trial's process, the Train controller's
    # and the function's calls with it, and Train's placement-group cleaner ends itself inside its `stop`; which
    # of them get listed depends on timing. Those are the only failures allowed, with one race of Train's: its
    # autoscaling coordinator is a named actor every trial's controller gets or creates (Ray's lock is per
    # process), and the loser's creation is listed as failed while the winner's actor lives on.
    failed = get_json(f"{url}/api/v0/tasks?filter_keys=state&filter_predicates=%3D&filter_values=FAILED&detail=true&limit=10000")
    failed = failed["data"]["result"]["result"]
    coordinator = "AutoscalingCoordinator:_AutoscalingCoordinatorActor.__init__"
    if any(t["name"] == coordinator for t in failed):
        actors = get_json(f"{url}/api/v0/actors?filter_keys=name&filter_predicates=%3D&filter_values=AutoscalingCoordinator&limit=100")
        assert any(a["state"] == "ALIVE" for a in actors["data"]["result"]["result"]), actors
    ended = ("WORKER_DIED", "ACTOR_DIED")
    unexpected = [t for t in failed if t["error_type"] not in ended and t["name"] != coordinator]
    assert not unexpected, Counter((t["name"], t["error_type"]) for t in unexpected)
    # Each trial is found by its id: its reports actor's repr (the Actors page) and its workers' log lines.
    actors = get_json(f"{url}/api/v0/actors?detail=true&limit=1000")["data"]["result"]["result"]
    reprs = sorted(a["repr_name"] for a in actors if a["class_name"] == "TrialReports")
    assert reprs == sorted(f"trial {t['trial_id']}" for t in trials)
    assert all(f"train-{t['trial_id']}: epoch 2/2" in logs for t in trials)
