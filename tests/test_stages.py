"""Stage results shared between trials: found, waited for, or built exactly once, by real concurrent processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from trainable.stages import LOCK, StageStore, StageStoreError, stage_key


def slow_build(log: Path, seconds: float = 1.0):
    def build(folder: Path) -> None:
        with log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        (folder / "teacher.pt").write_text(f"weights of {os.getpid()}")

    return build


def test_a_result_is_built_once_and_then_found(tmp_path: Path) -> None:
    stages = StageStore(tmp_path / "store")
    log = tmp_path / "builds"
    first = stages.get("pretrain_invariant", {"seed": 0, "split_hash": "ab"}, slow_build(log, 0), owner="trial-a")
    again = stages.get("pretrain_invariant", {"split_hash": "ab", "seed": 0}, slow_build(log, 0), owner="trial-b")
    assert (first.reused, again.reused) == (False, True) and first.path == again.path
    assert (again.path / "teacher.pt").read_text() == f"weights of {os.getpid()}"
    assert again.info["owner"] == "trial-a" and again.info["depends"] == {"seed": 0, "split_hash": "ab"}
    other = stages.get("pretrain_invariant", {"seed": 1, "split_hash": "ab"}, slow_build(log, 0))
    assert not other.reused and other.key != first.key and len(log.read_text().split()) == 2
    assert stage_key("pretrain_invariant", {"seed": 0}) != stage_key("pretrain_distinctive", {"seed": 0})
    assert not list(first.path.parent.glob("building-*")) and not (first.path.parent / LOCK).exists()


def _race(store: str, log: str, out: str) -> None:
    result = StageStore(store, poll_s=0.05).get("finetune_teachers", {"seed": 3}, slow_build(Path(log)), owner=f"p{os.getpid()}")
    Path(out).write_text(json.dumps({"reused": result.reused, "path": str(result.path)}))


def test_concurrent_trials_train_a_stage_once_and_the_others_wait(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"out{i}.json" for i in range(3)]
    procs = [context.Process(target=_race, args=(str(tmp_path / "store"), str(tmp_path / "builds"), str(o))) for o in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    results = [json.loads(o.read_text()) for o in outs]
    assert len((tmp_path / "builds").read_text().split()) == 1  # one build among three processes
    assert sorted(r["reused"] for r in results) == [False, True, True] and len({r["path"] for r in results}) == 1


def test_a_failed_build_lets_the_next_trial_build(tmp_path: Path) -> None:
    stages = StageStore(tmp_path / "store")

    def broken(folder: Path) -> None:
        (folder / "half.pt").write_text("x")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        stages.get("student_init", {"seed": 0}, broken)
    folder = stages.folder("student_init", stage_key("student_init", {"seed": 0}))
    assert not (folder / LOCK).exists() and not list(folder.iterdir())  # nothing half-built left
    assert not stages.get("student_init", {"seed": 0}, slow_build(tmp_path / "log", 0)).reused


def test_a_lock_whose_owner_died_is_taken_over(tmp_path: Path) -> None:
    stages = StageStore(tmp_path / "store", stale_s=2.0, poll_s=0.05)
    folder = stages.folder("pretrain_distinctive", stage_key("pretrain_distinctive", {"seed": 0}))
    folder.mkdir(parents=True)
    (folder / LOCK).write_text(json.dumps({"owner": "killed-trial", "pid": 1, "host": "gone", "token": "old"}))
    os.utime(folder / LOCK, (time.time() - 10, time.time() - 10))  # untouched for 10 s: its owner is dead
    result = stages.get("pretrain_distinctive", {"seed": 0}, slow_build(tmp_path / "log", 0), owner="survivor")
    assert not result.reused and result.info["owner"] == "survivor" and not (folder / LOCK).exists()
    # a lock touched recently is waited for, not broken
    fresh = stages.folder("pretrain_distinctive", stage_key("pretrain_distinctive", {"seed": 1}))
    fresh.mkdir(parents=True)
    (fresh / LOCK).write_text(json.dumps({"owner": "alive", "token": "t"}))
    started = time.monotonic()
    stages.get("pretrain_distinctive", {"seed": 1}, slow_build(tmp_path / "log", 0))
    assert time.monotonic() - started >= 1.5  # waited until the untouched lock went stale


def test_object_stores_are_refused() -> None:
    with pytest.raises(StageStoreError, match="shared filesystem"):
        StageStore("s3://bucket/store")
