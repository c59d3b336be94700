"""Stage results shared between trials: found, waited for, or built exactly once, by real concurrent processes, on a
folder and on a real S3 server alike."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trainable.stages import DONE, LOCK, StageStore, StageStoreError, remove_copies, stage_key


@pytest.fixture(params=["folder", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the stage results go: a folder, or a fresh bucket of the session's S3 server."""
    return str(tmp_path / "store") if request.param == "folder" else request.getfixturevalue("s3_store").uri


def slow_build(log: Path, seconds: float = 1.0):
    def build(folder: Path) -> None:
        with log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        (folder / "teacher.pt").write_text(f"weights of {os.getpid()}")

    return build


def names(stages: StageStore, folder: str) -> list[str]:
    return stages.objects.names(folder)


def test_a_result_is_built_once_and_then_found(tmp_path: Path, store_uri: str) -> None:
    stages = StageStore(store_uri)
    log = tmp_path / "builds"
    first = stages.get("pretrain_invariant", {"seed": 0, "subset_hash": "ab"}, slow_build(log, 0), owner="trial-a")
    again = StageStore(store_uri).get("pretrain_invariant", {"subset_hash": "ab", "seed": 0}, slow_build(log, 0), owner="trial-b")
    assert (first.reused, again.reused) == (False, True) and first.location == again.location
    assert (again.path / "teacher.pt").read_text() == f"weights of {os.getpid()}"
    assert again.info["owner"] == "trial-a" and again.info["depends"] == {"seed": 0, "subset_hash": "ab"}
    other = stages.get("pretrain_invariant", {"seed": 1, "subset_hash": "ab"}, slow_build(log, 0))
    assert not other.reused and other.key != first.key and len(log.read_text().split()) == 2
    assert stage_key("pretrain_invariant", {"seed": 0}) != stage_key("pretrain_distinctive", {"seed": 0})
    folder = stages.folder("pretrain_invariant", first.key)
    assert names(stages, folder) == [DONE, f"{LOCK}.000000", first.info["result"]]  # no build's leftovers
    assert first.location.startswith(store_uri.rstrip("/")) or not store_uri.startswith("s3://")


def test_a_trial_s_copies_of_s3_results_are_removed_when_it_ends(tmp_path: Path, store_uri: str) -> None:
    """A result on S3 is downloaded into this process's temp dir to be loaded; ``remove_copies`` (the Train worker's
    last step) deletes the copies, and a later load downloads again. A folder store's result is its own folder."""
    stages = StageStore(store_uri)
    built = stages.get("pretrain_invariant", {"seed": 5}, slow_build(tmp_path / "log", 0))
    found = StageStore(store_uri).get("pretrain_invariant", {"seed": 5}, slow_build(tmp_path / "log", 0))
    assert found.reused and (found.path / "teacher.pt").read_text() == f"weights of {os.getpid()}"
    copied = not store_uri.startswith(str(tmp_path))
    assert found.path.is_relative_to(tmp_path) != copied and (built.path.parent.name.startswith("stage-results-") == copied)
    remove_copies()
    assert found.path.exists() != copied and built.path.exists() != copied
    again = StageStore(store_uri).get("pretrain_invariant", {"seed": 5}, slow_build(tmp_path / "log", 0))
    assert again.reused and (again.path / "teacher.pt").read_text() == f"weights of {os.getpid()}"
    remove_copies()
    assert len((tmp_path / "log").read_text().split()) == 1  # built once


def _race(store: str, log: str, out: str) -> None:
    result = StageStore(store, poll_s=0.05).get("finetune_teachers", {"seed": 3}, slow_build(Path(log)), owner=f"p{os.getpid()}")
    Path(out).write_text(json.dumps({"reused": result.reused, "location": result.location,
                                     "weights": (result.path / "teacher.pt").read_text()}))  # fmt: skip


def test_concurrent_trials_train_a_stage_once_and_the_others_wait(tmp_path: Path, store_uri: str) -> None:
    context = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"out{i}.json" for i in range(3)]
    procs = [context.Process(target=_race, args=(store_uri, str(tmp_path / "builds"), str(o))) for o in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    results = [json.loads(o.read_text()) for o in outs]
    [builder] = (tmp_path / "builds").read_text().split()  # one build among three processes
    assert sorted(r["reused"] for r in results) == [False, True, True] and len({r["location"] for r in results}) == 1
    assert {r["weights"] for r in results} == {f"weights of {builder}"}


def test_a_failed_build_lets_the_next_trial_build(tmp_path: Path, store_uri: str) -> None:
    stages = StageStore(store_uri)

    def broken(folder: Path) -> None:
        (folder / "half.pt").write_text("x")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        stages.get("student_init", {"seed": 0}, broken)
    folder = stages.folder("student_init", stage_key("student_init", {"seed": 0}))
    assert names(stages, folder) == [f"{LOCK}.000000"]  # released, nothing half-built left
    started = time.monotonic()
    result = stages.get("student_init", {"seed": 0}, slow_build(tmp_path / "log", 0))
    assert not result.reused and time.monotonic() - started < 5  # taken over at once, as the next generation
    assert names(stages, folder) == [DONE, f"{LOCK}.000000", f"{LOCK}.000001", result.info["result"]]


def test_a_builder_that_died_is_taken_over(tmp_path: Path, store_uri: str) -> None:
    """A builder killed mid-build (SIGKILL: no chance to release) is taken over at once on its own host, and one
    on another host once its lock has been silent for ``stale_s``; a builder whose lock still beats is waited for."""
    stages = StageStore(store_uri, stale_s=2.0, heartbeat_s=0.2, poll_s=0.05)
    depends = {"seed": 0}
    folder = stages.folder("pretrain_distinctive", stage_key("pretrain_distinctive", depends))
    code = ("import sys, time; from pathlib import Path; from trainable.stages import StageStore\n"
            "def build(folder):\n    Path(sys.argv[2]).write_text('started'); time.sleep(600)\n"
            "StageStore(sys.argv[1], heartbeat_s=0.2).get('pretrain_distinctive', {'seed': 0}, build, owner='killed')")  # fmt: skip
    started = tmp_path / "started"
    victim = subprocess.Popen([sys.executable, "-c", code, store_uri, str(started)], cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 60
    while not started.exists():
        assert victim.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    waited = time.monotonic()
    victim.kill()
    victim.wait()
    result = stages.get("pretrain_distinctive", depends, slow_build(tmp_path / "log", 0), owner="survivor")
    assert not result.reused and result.info["owner"] == "survivor" and time.monotonic() - waited < 2.0
    assert f"{LOCK}.000001" in names(stages, folder)
    # a lock of another host, untouched: taken over once it was silent for stale_s
    silent = stages.folder("pretrain_distinctive", stage_key("pretrain_distinctive", {"seed": 1}))
    assert stages.objects.create(f"{silent}/{LOCK}.000000", json.dumps({"owner": "lost-node", "host": "elsewhere", "pid": 1}).encode())
    waited = time.monotonic()
    assert not stages.get("pretrain_distinctive", {"seed": 1}, slow_build(tmp_path / "log", 0)).reused
    assert 2.0 <= time.monotonic() - waited < 10


def test_a_builder_whose_lock_beats_is_waited_for(tmp_path: Path, store_uri: str) -> None:
    """A slow build elsewhere (a lock of another host that keeps beating, past stale_s) is waited for, not taken."""
    waiter = StageStore(store_uri, stale_s=0.5, poll_s=0.05)
    folder = waiter.folder("finetune_teachers", stage_key("finetune_teachers", {"seed": 2}))
    lock = f"{folder}/{LOCK}.000000"
    record = {"owner": "slow", "host": "elsewhere", "pid": 1}
    assert waiter.objects.create(lock, json.dumps(record).encode())
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(r=waiter.get("finetune_teachers", {"seed": 2}, slow_build(tmp_path / "log", 0))))
    thread.start()
    for beat in range(1, 15):  # 2.8 s of beats, far past stale_s
        time.sleep(0.2)
        waiter.objects.write(lock, json.dumps({**record, "beat": beat}).encode())
    assert thread.is_alive() and not (tmp_path / "log").exists()
    info = {"owner": "slow", "result": "result-slow"}
    waiter.objects.write(f"{folder}/result-slow/teacher.pt", b"weights of slow")
    assert waiter.objects.create(f"{folder}/{DONE}", json.dumps(info).encode())
    thread.join(timeout=30)
    assert outcome["r"].reused and (outcome["r"].path / "teacher.pt").read_text() == "weights of slow"


def test_other_object_stores_are_refused() -> None:
    with pytest.raises(StageStoreError, match="in a folder .* or on S3, not mock:"):
        StageStore("mock:///store")
