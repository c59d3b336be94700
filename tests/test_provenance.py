"""Nothing lost, nothing doubled: provenance a resume cannot overwrite, and one driver per search."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from results.page import write
from results.plot import load as load_search
from results.report import history
from results.store import Store
from results.tables import read
from search.__main__ import main
from search.lease import Lease, LeaseError

from conftest import tiny_config, write_space
from processes import search_driver

ROOT = Path(__file__).resolve().parents[1]


def one_trial(tmp_path: Path, data: Path, name: str = "prov", **base: object) -> Path:
    config = {**tiny_config(data), "epochs": 1, **base}
    return write_space(tmp_path / f"{name}.yaml", name=name, base=config, seeds=[0],
                       resources={"workers": 1, "cpus_per_worker": 1}, max_concurrent=1)  # fmt: skip


def parts(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*.parquet") if "/train/" not in str(p) and "/tune/" not in str(p))


def test_a_changed_resume_is_refused_and_a_revision_is_recorded(
    ray_local: str, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resumed with another --set, a search is refused (check and run alike) with the difference and the two ways
    on, and nothing is written; with --revise it runs as revision 2, and its history keeps both runs."""
    path = one_trial(tmp_path, tiny_dataset)
    store = tmp_path / "store"
    common = [str(path), "--name", "prov", "--store", str(store)]
    assert main(["run", *common, "--set", "steps_per_epoch=2"]) == 0
    before = parts(store)
    capsys.readouterr()
    for command in ("check", "run"):
        assert main([command, *common, "--set", "steps_per_epoch=3"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert 'ran revision 1 with other settings: overrides {"steps_per_epoch": 2} -> {"steps_per_epoch": 3}' in err[0]
        assert "another --name" in err[0] and "--revise to record it as revision 2 of prov" in err[0]
    assert parts(store) == before  # refused before anything was written
    # an edited space file is a change too, and the refusal shows how the file differs
    path.write_text(path.read_text().replace("mu: 2", "mu: 3"))
    assert main(["run", *common, "--set", "steps_per_epoch=2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "the space file (2 lines differ)" in err[0] and "  -  mu: 2" in err and "  +  mu: 3" in err
    path.write_text(path.read_text().replace("mu: 3", "mu: 2"))

    assert main(["run", *common, "--set", "steps_per_epoch=3", "--revise"]) == 0
    assert main(["run", *common, "--set", "steps_per_epoch=3"]) == 0  # the same as revision 2: a resume of it
    s = Store(store)
    runs = read(s, "runs", "prov").to_pylist()
    assert [(r["revision"], json.loads(r["overrides"])) for r in sorted(runs, key=lambda r: r["run_id"])] == [
        (1, {"steps_per_epoch": 2}), (2, {"steps_per_epoch": 3}), (2, {"steps_per_epoch": 3})
    ]
    assert all(r["host"] == socket.gethostname() and r["pid"] == os.getpid() for r in runs)
    [search] = read(s, "searches", "prov").to_pylist()
    assert search["revision"] == 2 and json.loads(search["overrides"]) == {"steps_per_epoch": 3}
    trials = read(s, "trials", "prov").to_pylist()
    assert sorted((t["steps_per_epoch"], t["revision"]) for t in trials) == [(2, 1), (3, 2)]
    assert len(re.findall(r"^\s+[12]\s", history(s, "prov"), re.M)) == 3
    page = re.sub(r"<[^>]+>", " ", write(load_search(s, "prov"), tmp_path / "p.html").read_text())
    assert "revision" in page and "3 runs of this search" in page


def test_a_second_driver_of_a_running_search_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    """Two `search run --name X` at once: the second is refused at once, naming the first; the search runs once."""
    path = one_trial(tmp_path, tiny_dataset, "twice", epochs=3, steps_per_epoch=12)
    store = tmp_path / "store"
    first = search_driver(path, "twice", store, tmp_path / "first.log")
    lease = store / "leases" / "twice.json"
    deadline = time.time() + 120
    while not lease.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert lease.exists(), (tmp_path / "first.log").read_text()[-3000:]
    second = subprocess.run(
        [sys.executable, "-m", "search", "run", str(path), "--name", "twice", "--store", str(store)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    [line] = second.stderr.strip().splitlines()
    assert f"is being run by another driver: pid {first.pid} on {socket.gethostname()}" in line
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    trials = read(Store(store), "trials", "twice").to_pylist()
    assert len(trials) == 1 and trials[0]["status"] == "completed"
    assert not lease.exists()  # given back at the end


def test_a_lease_whose_holder_is_gone_is_taken_over(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    folder = tmp_path / "store" / "leases"
    folder.mkdir(parents=True)
    now = datetime.now(timezone.utc)

    def held(pid: int, renewed: datetime, host: str = socket.gethostname()) -> None:
        record = {"token": "other", "host": host, "pid": pid, "started_at": now.isoformat(), "renewed_at": renewed.isoformat()}
        (folder / "s.json").write_text(json.dumps(record))

    held(os.getpid(), now)  # alive, renewed now: refused, the holder named
    with pytest.raises(LeaseError, match=rf"pid {os.getpid()} on {re.escape(socket.gethostname())}"):
        Lease(store, "s").acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid, renewed, host in [(dead.pid, now, socket.gethostname()), (1, now - timedelta(minutes=5), "elsewhere")]:
        held(pid, renewed, host)  # a pid that is gone on this host; a holder elsewhere silent for 5 minutes
        with Lease(store, "s"):
            assert json.loads((folder / "s.json").read_text())["pid"] == os.getpid()
        assert not (folder / "s.json").exists()


def test_the_lease_holds_on_an_s3_store(s3_store: Store) -> None:
    """On S3 (no exclusive create through pyarrow.fs) the lease is written and read back: a second driver is
    refused naming the first, the lease is gone once given back, and a gone holder's is taken over."""
    with Lease(s3_store, "s") as held:
        assert held.holder()["pid"] == os.getpid()
        with pytest.raises(LeaseError, match=rf"pid {os.getpid()} on {re.escape(socket.gethostname())}"):
            Lease(s3_store, "s").acquire()
    assert Lease(s3_store, "s").holder() is None
    old = datetime.now(timezone.utc) - timedelta(minutes=5)
    with s3_store.fs.open_output_stream(f"{s3_store.root}/leases/s.json") as f:
        f.write(json.dumps({"token": "other", "host": "elsewhere", "pid": 1, "started_at": old.isoformat(),
                            "renewed_at": old.isoformat()}).encode())  # fmt: skip
    with Lease(s3_store, "s") as taken:
        assert taken.holder()["token"] == taken.token
