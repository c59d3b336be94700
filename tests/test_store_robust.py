"""The store survives a bad file, and the ``results`` commands refuse bad input in one line (issue 22, items 4-6).

Every store here is real Parquet written through ``Store``; a part is then damaged the ways files get damaged (a
garbled footer, zero bytes, cut short, garbled pages). The commands run as a user runs them, in a subprocess, for
their exit codes and the lines they print on stderr.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from results.__main__ import main
from results.page import write
from results.plot import load
from results.store import QUARANTINE, Store, StoreError
from results.tables import compact, connect, read

ROOT = Path(__file__).resolve().parents[1]


def search(store: Store, search_id: str) -> None:
    """A search of three trials (thresholds 0.5 on seeds 0 and 1, 0.9 on seed 0) of three epochs each, a part a row."""
    store.append("searches", search_id, [{"search_id": search_id, "name": f"demo-{search_id}", "metric": "top1",
                                          "mode": "max", "status": "completed", "started_at": "2026-01-01"}])  # fmt: skip
    for trial_id, threshold, seed in (("t1", 0.5, 0), ("t2", 0.9, 0), ("t3", 0.5, 1)):
        store.append("trials", search_id, [{"trial_id": trial_id, "threshold": threshold, "seed": seed, "status": "completed",
                                            "stopped_at_epoch": None, "error": None, "wall_s": 1.0,
                                            "started_at": f"2026-01-01T00:0{trial_id[1]}:00"}])  # fmt: skip
        for n in (1, 2, 3):
            store.append("epochs", search_id, [{"trial_id": trial_id, "seed": seed, "epoch": n, "top1": 10.0 * n + seed + threshold,
                                                "loss": 1.0 / n}])  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Searches ``a`` and ``b``, not compacted."""
    store = Store(tmp_path / "store")
    search(store, "a")
    search(store, "b")
    return store


def cli(store: Store | Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    uri = store.uri if isinstance(store, Store) else str(store)
    return subprocess.run([sys.executable, "-m", "results", *args, "--store", uri], capture_output=True, text=True, cwd=ROOT)


def damage(path: str, how: str) -> None:
    """Damage a part in place: ``footer`` (its last bytes overwritten), ``zero`` (emptied), ``truncated`` (cut in
    half), ``pages`` (the bytes after the leading magic overwritten: the footer still opens)."""
    data = bytearray(Path(path).read_bytes())
    if how == "footer":
        data[-12:] = b"\xde\xad" * 6
    elif how == "zero":
        data = bytearray()
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:
        data[4:40] = b"\xab" * 36
    Path(path).write_bytes(bytes(data))


def one_line(out: subprocess.CompletedProcess[str], *wanted: str) -> str:
    """The one stderr line of a refused command (exit 2, no traceback), which says each of ``wanted``."""
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (out.returncode, out.stderr)
    assert all(w in lines[0] for w in wanted), lines[0]
    return lines[0]


def test_a_corrupt_part_costs_no_other_search_anything(store: Store) -> None:
    compact(store, "a")
    compact(store, "b")
    sql = "SELECT search_id, trial_id, epochs_run, final_top1 FROM trials ORDER BY ALL"
    before = {args: cli(store, *args) for args in (("show", "b"), ("table", "b"), ("query", sql))}
    assert all(out.returncode == 0 and out.stderr == "" for out in before.values())
    [merged] = store.parts("searches", "a")  # the one searches part compaction left
    damage(merged, "footer")
    size = Path(merged).stat().st_size

    for args, out in before.items():  # the other search reads as before
        again = cli(store, *args)
        assert (again.returncode, again.stdout) == (0, out.stdout), again.stderr
    # the whole-store query warns once, naming the file, its size and its search: a's trials still read (their
    # parts are sound), only a's searches row is gone
    out = cli(store, "query", sql)
    [warning] = out.stderr.splitlines()
    assert merged in warning and f"{size} bytes" in warning and "search a" in warning and "table searches" in warning
    assert [line.split()[0] for line in out.stdout.splitlines()[2:]] == ["a"] * 3 + ["b"] * 3
    # compaction of every search goes on past it, and leaves the bad file where it is for verify
    out = cli(store, "compact")
    assert out.returncode == 0 and out.stdout.splitlines() == ["a: 0 searches, 3 trials, 9 epochs, 0 stages, 0 runs",
                                                               "b: 1 searches, 3 trials, 9 epochs, 0 stages, 0 runs"]  # fmt: skip
    assert len(out.stderr.splitlines()) == 1 and merged in out.stderr
    assert store.parts("searches", "a") == [merged]
    # a's own commands say what is missing in one line, not with DuckDB's error
    lines = cli(store, "show", "a").stderr.splitlines()
    assert len(lines) == 2 and merged in lines[0] and "search 'a'" in lines[1] and "no readable searches row" in lines[1]


@pytest.mark.parametrize("how", ["footer", "zero", "truncated"])
def test_an_unreadable_part_is_skipped_with_one_warning(store: Store, how: str, caplog: pytest.LogCaptureFixture) -> None:
    part = store.parts("epochs", "a")[4]  # t2's epoch 2
    damage(part, how)
    size = Path(part).stat().st_size
    with caplog.at_level(logging.WARNING):
        epochs = read(store, "epochs", "a")
        trials = {t["trial_id"]: t for t in read(store, "trials").to_pylist() if t["search_id"] == "a"}
    assert epochs.num_rows == 8 and (("t2", 2) not in {(e["trial_id"], e["epoch"]) for e in epochs.to_pylist()})
    assert trials["t2"]["epochs_run"] == 3 and trials["t1"]["final_top1"] == 30.5
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]  # once, though read twice
    assert part in record.getMessage() and f"({size} bytes" in record.getMessage() and "search a" in record.getMessage()
    assert read(store, "epochs", "b").num_rows == 9


def test_verify_lists_unreadable_parts_and_quarantine_moves_them_aside(store: Store) -> None:
    compact(store, "b")
    bad = {store.parts("searches", "a")[0]: "footer", store.parts("epochs", "a")[0]: "zero", store.parts("trials", "a")[1]: "pages"}
    for path, how in bad.items():
        damage(path, how)
    saved = {path: Path(path).read_bytes() for path in bad}
    assert len(store.readable_parts("trials", "a")) == 3  # garbled pages behind a sound footer: only verify finds them

    out = cli(store, "verify")
    assert out.returncode == 1, out.stderr
    listed = out.stdout.splitlines()
    assert len(listed) == 4 and listed[-1] == f"3 of {1 + 3 + 9 + 3} parts cannot be read; --quarantine moves them aside"
    for path, table in zip(sorted(bad), ("epochs", "searches", "trials")):
        [line] = [line for line in listed if line.startswith(path)]
        assert f"({len(saved[path])} bytes, table {table}, search a)" in line
    out = cli(store, "verify", "b")
    assert (out.returncode, out.stdout) == (0, "3 parts, all readable\n")
    one_line(cli(store, "verify", "nope"), "no search 'nope'", "searches: a, b")

    out = cli(store, "verify", "a", "--quarantine")
    assert out.returncode == 1 and out.stdout.count("  moved to ") == 3, out.stdout
    root = Path(store.root)
    for path, data in saved.items():  # moved, not deleted: the same bytes under quarantine/<table>/search_id=a/
        rel = Path(path).relative_to(root)
        assert not Path(path).exists() and (root / QUARANTINE / rel).read_bytes() == data
    assert cli(store, "verify").returncode == 0
    # what is left reads: but for t2, whose only trials part it was, and the emptied epoch
    assert read(store, "epochs", "a").num_rows == 8 and sorted(read(store, "trials", "a")["trial_id"].to_pylist()) == ["t1", "t3"]


def test_dot_files_are_no_parts_for_any_reader_or_compaction(store: Store) -> None:
    before = cli(store, "show", "a")
    folder = Path(store.folder("epochs", "a"))
    # a macOS copy tool's ._ file that happens to be Parquet (rows no reader may see), one that is not, and a
    # temporary of the store's own left by a crash between write and rename
    pq.write_table(pa.table({"trial_id": ["t1"], "seed": [0], "epoch": [9], "top1": [999.0], "ledger_ns": [2**62]}),
                   folder / "._part-1.parquet")  # fmt: skip
    (Path(store.folder("trials", "a")) / "._part-2.parquet").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    stray = folder / ".part-3.parquet.0a1b2c3d.tmp"
    stray.write_bytes(b"half a file")
    assert len(store.parts("epochs", "a")) == 9 and len(store.parts("trials", "a")) == 3

    after = cli(store, "show", "a")
    assert (after.returncode, after.stdout, after.stderr) == (0, before.stdout, "")
    out = cli(store, "compact", "a")
    assert (out.returncode, out.stdout, out.stderr) == (0, "a: 1 searches, 3 trials, 9 epochs, 0 stages, 0 runs\n", "")
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == ["._part-1.parquet", ".part-3.parquet.0a1b2c3d.tmp"]
    assert max(e["epoch"] for e in read(store, "epochs", "a").to_pylist()) == 3
    assert cli(store, "verify", "a").returncode == 0


@pytest.mark.parametrize("writes", ["garbage", "fewer rows"])
def test_compaction_keeps_the_parts_when_its_merged_file_does_not_read_back(store: Store, writes: str,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    tables = ("searches", "trials", "epochs")
    parts = {t: store.parts(t, "a") for t in tables}
    rows = {t: sorted(map(str, read(store, t, "a").to_pylist())) for t in tables}
    real = pq.write_table

    def bad_write(table: pa.Table, out: pa.NativeFile) -> None:
        if writes == "garbage":
            out.write(b"PAR1 not really parquet")
        else:
            real(table.slice(0, table.num_rows - 1), out)

    monkeypatch.setattr(pq, "write_table", bad_write)
    with pytest.raises(StoreError, match="does not read back" if writes == "garbage" else "reads back 0 rows of 1"):
        compact(store, "a")
    assert main(["compact", "a", "--store", store.uri]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: a: not compacted: ") and "-merged.parquet" in line
    monkeypatch.undo()
    for t in tables:  # every part still there, nothing merged, no temporary left, the same rows
        assert store.parts(t, "a") == parts[t]
        assert not [p for p in Path(store.folder(t, "a")).iterdir() if p.name.startswith(".")]
        assert sorted(map(str, read(store, t, "a").to_pylist())) == rows[t]
    assert compact(store, "a") == {"searches": 1, "trials": 3, "epochs": 9, "stages": 0, "runs": 0}


@pytest.mark.parametrize("command", [["query", "SELECT 1"], ["show", "a"], ["table", "a"], ["plot", "a"], ["report", "a"],
                                     ["compact"], ["verify"]])  # fmt: skip
def test_every_command_refuses_a_store_that_is_not_there(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nowhere"
    one_line(cli(missing, *command), f"{missing}: no such store")
    (tmp_path / "empty").mkdir()  # a folder, but no store: no longer an empty answer
    one_line(cli(tmp_path / "empty", *command), f"{tmp_path / 'empty'}: not a store")
    assert not missing.exists()


def test_a_search_without_trials_is_refused_by_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.append("searches", "new", [{"search_id": "new", "name": "fresh", "metric": "top1", "mode": "max", "status": "running",
                                         "started_at": "2026-01-01"}])  # fmt: skip
    for command in (["table", "new"], ["table", "fresh"], ["show", "new"], ["plot", "new"], ["report", "new"]):
        one_line(cli(store, *command), "search 'new'", "has no trials yet")


def test_report_refuses_an_empty_or_folder_out_and_leaves_no_temporary(store: Store, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "figs").mkdir(parents=True)
    run = lambda *args: subprocess.run([sys.executable, "-m", "results", *args, "--store", store.uri],  # noqa: E731
                                       capture_output=True, text=True, cwd=work)  # fmt: skip
    one_line(run("report", "b", "--out", ""), "--out is empty")
    one_line(run("plot", "b", "--out", ""), "--out is empty")
    one_line(run("report", "b", "--out", "figs"), "--out figs: a folder")
    assert [p.name for p in work.rglob("*")] == ["figs"]  # nothing written, in the folder or beside it
    out = run("report", "b", "--out", "pages/b.html")
    assert out.returncode == 0 and out.stdout == "pages/b.html\n", out.stderr
    assert [p.name for p in (work / "pages").iterdir()] == ["b.html"]
    with pytest.raises(OSError):  # the rename fails: its temporary goes too
        write(load(store, "b"), work / "figs")
    assert sorted(p.name for p in work.iterdir()) == ["figs", "pages"] and not list((work / "figs").iterdir())


SANDBOX = [
    ("SELECT * FROM read_csv('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
    ("SELECT * FROM read_parquet('{outside}')", 'Cannot access file "{outside}"'),
    ("SELECT * FROM glob('/etc/*')", 'Cannot access file "/etc/*"'),
    ("COPY (SELECT * FROM trials) TO '{leak}'", "(statement type COPY)"),
    ("SELECT 1; COPY trials TO '{leak}'", "refused \"COPY trials TO '/"),
    ("ATTACH '{db}' AS x", "(statement type ATTACH)"),
    ("INSTALL httpfs", "refused 'INSTALL httpfs' (statement type LOAD)"),
    ("LOAD httpfs", "refused 'LOAD httpfs' (statement type LOAD)"),
    ("SET threads = 1", "(statement type SET)"),
    ("PRAGMA threads = 1", "(statement type SET)"),
    ("CREATE TABLE t AS SELECT 1", "(statement type CREATE)"),
]


@pytest.mark.parametrize("sql, says", SANDBOX, ids=[s for s, _ in SANDBOX])
def test_query_runs_only_selects_over_the_tables(store: Store, tmp_path: Path, sql: str, says: str) -> None:
    paths = {"outside": tmp_path / "outside.parquet", "leak": tmp_path / "leak.csv", "db": tmp_path / "x.db"}
    pq.write_table(pa.table({"x": [1]}), paths["outside"])
    one_line(cli(store, "query", sql.format(**paths)), "error: query: ", says.format(**paths), "without --unsafe")
    assert not paths["leak"].exists() and not paths["db"].exists()


def test_query_selects_and_unsafe_is_duckdb_in_full(store: Store, tmp_path: Path) -> None:
    out = cli(store, "query", "SELECT search_id, count(*) AS trials, sum(epochs_run) AS epochs FROM trials GROUP BY ALL ORDER BY 1")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert [line.split() for line in out.stdout.splitlines()[2:]] == [["a", "3", "9"], ["b", "3", "9"]]
    out = cli(store, "query", "WITH e AS (FROM epochs WHERE search_id = 'a') SELECT max(top1) AS m FROM e")
    assert out.returncode == 0 and out.stdout.split()[-1] == "31.5"
    out = cli(store, "query", "SELECT count(*) FROM read_csv('/etc/passwd', header = false, sep = ':')", "--unsafe")
    assert out.returncode == 0 and int(out.stdout.split()[-1]) > 0, out.stderr
    leak = tmp_path / "trials.csv"
    assert cli(store, "query", f"COPY (FROM trials) TO '{leak}'", "--unsafe").returncode == 0
    assert len(leak.read_text().splitlines()) == 7


def test_a_locked_connection_opens_no_file_but_the_parts(store: Store, tmp_path: Path) -> None:
    """What DuckDB's own settings refuse, beneath ``query``'s SELECT-only rule (which is there because they still let
    ``COPY … TO`` overwrite an allowed path, a part)."""
    con = connect(store, locked=True)
    assert con.execute("SELECT count(*) FROM epochs").fetchall() == [(18,)]
    refused = {
        "SELECT * FROM read_csv('/etc/passwd')": duckdb.PermissionException,
        f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'": duckdb.PermissionException,
        f"ATTACH '{tmp_path / 'x.db'}'": duckdb.PermissionException,
        "INSTALL httpfs": duckdb.PermissionException,
        "LOAD httpfs": duckdb.PermissionException,
        "SET threads = 1": duckdb.InvalidInputException,
        "SET enable_external_access = true": duckdb.InvalidInputException,
        "SET allowed_paths = ['/etc/passwd']": duckdb.InvalidInputException,
    }
    for sql, error in refused.items():
        with pytest.raises(error):
            con.execute(sql)
    assert not list(tmp_path.glob("x.*"))
