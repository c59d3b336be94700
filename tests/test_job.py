"""``ray job submit`` against a real head node with the dashboard, started and stopped by this test."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from processes import RAY, ROOT, child_env, get_json, kill_tree, start_head
from test_search import tiny_space

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
            RAY, "job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
            sys.executable, "-m", "search", "run", str(space), "--store", str(store), "--name", "job-search",
        ],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert submit.returncode == 0, submit.stdout[-12000:] + submit.stderr[-3000:]
    assert "search job-search: trials by top1" in submit.stdout  # the job's own output, streamed back

    jobs = get_json(f"{url}/api/jobs/")
    assert [j["status"] for j in jobs] == ["SUCCEEDED"]
    logs = get_json(f"{url}/api/jobs/{jobs[0]['submission_id']}/logs")["logs"]
    assert "epoch 2/2" in logs  # per-epoch lines of the Train workers reach `ray job logs`

    trials = pq.read_table(store / "trials").to_pylist()
    epochs = pq.read_table(store / "epochs").to_pylist()
    assert sorted(t["threshold"] for t in trials) == [0.0, 0.9]
    assert all(t["status"] == "completed" for t in trials)
    assert len(epochs) == 4
    groups = get_json(f"{url}/api/v0/placement_groups?limit=100")["data"]["result"]["result"]
    assert all(g["state"] == "REMOVED" for g in groups), groups  # no trial left its workers' resources behind
