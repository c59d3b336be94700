"""The store on a real S3 server (moto's server mode on loopback, ``s3_server`` in conftest): the same tables, the
same latest-wins views and the same ``results`` commands as on a folder, with nothing downloaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from results.__main__ import main
from results.store import TABLES, Store
from results.tables import compact, read

from conftest import demo_search, timebalance_search


def both(tmp_path: Path, s3_store: Store) -> tuple[Store, Store]:
    """The same two searches (``s``, and the TimeBalance search ``tb``) written to a folder and to S3."""
    local = Store(tmp_path / "local")
    for store in (local, s3_store):
        demo_search(store)
        timebalance_search(store)
    return local, s3_store


def rows(store: Store, table: str, search_id: str | None = None) -> list[dict]:
    """A view's rows in a fixed order, NaN as a string (NaN equals nothing), the store's own location taken out of
    the ``path`` of stage rows."""
    found = [{k: "nan" if v != v else v for k, v in row.items()} for row in read(store, table, search_id).to_pylist()]
    for row in found:
        if row.get("path"):
            row["path"] = row["path"].removeprefix(store.root)
    return sorted(found, key=repr)


def test_the_views_read_the_same_on_s3_as_on_a_folder(tmp_path: Path, s3_store: Store) -> None:
    """Every view (latest rows, summaries derived from epochs, stages) is the same on S3, before and after a
    compaction, which leaves one file per table there too; a part that does not open is left out on S3 as well."""
    local, s3 = both(tmp_path, s3_store)
    assert s3.parts("epochs", "s") and not s3.local
    for table in TABLES:
        assert rows(s3, table) == rows(local, table), table
    [a] = [t for t in rows(s3, "trials", "s") if t["trial_id"] == "a"]
    assert a["best_top1"] == 99.0 and a["epochs_run"] == 3 and a["status"] == "completed"  # latest wins on S3
    for store in (local, s3):
        compact(store, "tb")
    assert all(len(s3.parts(t, "tb")) == 1 for t in ("searches", "trials", "epochs", "stages"))
    for table in TABLES:
        assert rows(s3, table, "tb") == rows(local, table, "tb"), table
    with s3.fs.open_output_stream(f"{s3.folder('epochs', 's')}/part-99999999999999999999-bad.parquet") as out:
        out.write(b"PAR1 not a footer")
    assert rows(s3, "epochs", "s") == rows(local, "epochs", "s")


def results(store: Store, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``python -m results … --store <store>``: its exit code, stdout and stderr."""
    code = main([*args, "--store", store.uri])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_results_commands_read_an_s3_store_with_nothing_downloaded(
    tmp_path: Path, s3_store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """show, table, query, plot, report and compact on S3 print what they print for the same search on a folder;
    DuckDB finds no extension installed earlier (HOME is empty) and needs none."""
    local, s3 = both(tmp_path, s3_store)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    commands = [
        ("show", "s"), ("show", "tb"), ("table", "tb", "--metric", "top1"),
        ("query", "SELECT trial_id, best_top1, stages_built FROM trials ORDER BY trial_id"),
    ]  # fmt: skip
    for command in commands:
        (code, out, err), on_folder = results(s3, capsys, *command), results(local, capsys, *command)
        assert code == 0, (command, err)
        assert (code, out, err) == on_folder and out.strip(), command
    assert not (tmp_path / "home").exists()
    # SQL given to ``query`` may still only read the tables: another file is refused on S3 as on a folder
    code, _, err = results(s3, capsys, "query", f"SELECT * FROM read_csv('{tmp_path / 'x.csv'}')")
    assert code == 2 and err.startswith("error:"), err
    code, _, err = results(s3, capsys, "plot", "tb", "--out", str(tmp_path / "figures"))
    assert code == 0, err
    assert {p.name for p in (tmp_path / "figures").iterdir()} >= {"ablation_top1.png", "curves_top1.png", "stages.png"}
    code, _, err = results(s3, capsys, "report", "tb", "--out", str(tmp_path / "tb.html"))
    assert code == 0, err
    html = (tmp_path / "tb.html").read_text()
    assert "tb-test" in re.sub(r"<[^>]+>", " ", html) and html.count('src="data:image/png;base64,') >= 3
    before = rows(s3, "trials", "tb")
    code, _, err = results(s3, capsys, "compact", "tb")
    assert code == 0, err
    assert len(s3.parts("epochs", "tb")) == 1 and rows(s3, "trials", "tb") == before


def test_doctor_names_a_store_the_driver_cannot_use(s3_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bucket that does not exist is one FAIL line naming the store and what S3 said, exit 1, before Ray starts;
    a store that cannot be opened at all is bad input (exit 2)."""
    from search.__main__ import main as search

    assert search(["doctor", "--store", "s3://no-such-bucket/results"]) == 1
    [line] = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("FAIL store s3://no-such-bucket/results from the driver:") and "bucket" in line.lower(), line
    assert search(["doctor", "--store", " "]) == 2
    assert capsys.readouterr().err.startswith("error: --store: empty")
