"""The Parquet store as an append-only ledger: four tables (``searches``, ``trials``, ``epochs``, ``stages``) under one
folder or URI.

Every write is a new, small Parquet file (a *part*) in the search's hive partition,
``<store>/<table>/search_id=<id>/part-<ns>-<random>.parquet``: nothing ever rewrites earlier rows, so a
write costs the same at the first report as at the twenty-thousandth, and a crash can lose nothing that
was written. Each file is written under a hidden temporary name and then moved into place, so a reader
never sees half a file. Every row carries ``ledger_ns`` (when it was written); where a key has several
rows (a trial's start and end events, an epoch that a retried attempt reported again), the latest wins.

``compact`` merges a search's parts into one file per table, keeping only the winning rows, and is run
when a search ends and by ``python -m results compact``. It writes the merged file before deleting the
parts it merged, so a reader sees either the parts, or both (the same rows twice, which the latest-wins
views collapse), never neither. The views that do the collapsing, and derive each trial's summary
(``epochs_run``, ``final_*``, ``best_*``) from its epochs, are in ``results.tables``.

Writers use ``pyarrow.fs`` (a local folder, ``s3://…``); readers are DuckDB over the files themselves.
"""

from __future__ import annotations

import os
import posixpath
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TABLES = ("searches", "trials", "epochs", "stages")
# The columns that identify a row of each table: of several rows with the same key, the latest wins. A ``stages`` row
# is a pipeline stage's result that a trial used (built, or found built): one per (trial, stage).
KEYS = {
    "searches": ("search_id",),
    "trials": ("search_id", "trial_id"),
    "epochs": ("search_id", "trial_id", "epoch"),
    "stages": ("search_id", "trial_id", "stage"),
}
ORDER = "ledger_ns"  # nanoseconds since the epoch at which the row was written
PARTITION = "search_id"
# Where results go unless a command is told otherwise.
DEFAULT_STORE = os.environ.get("ACTNET_STORE", "store")


class StoreError(ValueError):
    """A name the store cannot hold (e.g. a search id that is not a valid folder name)."""


def check_search_id(search_id: str) -> str:
    """A search id becomes a folder name ``search_id=<id>``: no separators, no '=', nothing hidden."""
    if not search_id or search_id.startswith(".") or any(c in search_id for c in "/\\=*?[]\n"):
        raise StoreError(f"search name {search_id!r}: use letters, digits, '-', '_' and '.', not starting with '.'")
    return search_id


class Store:
    """A folder or URI holding the tables."""

    def __init__(self, uri: str | os.PathLike[str]) -> None:
        uri = str(uri)
        if "://" not in uri:
            uri = os.path.abspath(os.path.expanduser(uri))
        self.uri = uri
        self.fs, self.root = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __reduce__(self) -> tuple:  # pickled as its URI: a Train worker on another node opens its own filesystem
        return (Store, (self.uri,))

    def folder(self, table: str, search_id: str) -> str:
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        return f"{self.root}/{table}/{PARTITION}={check_search_id(search_id)}"

    def append(self, table: str, search_id: str, rows: list[dict[str, Any]]) -> str:
        """Write ``rows`` as one new part of ``table`` for this search; return the part's path.

        The search id is the partition folder, not a column of the file (readers get it from the path).
        """
        folder = self.folder(table, search_id)
        stamp = time.time_ns()
        records = [{k: v for k, v in row.items() if k != PARTITION} | {ORDER: row.get(ORDER) or stamp} for row in rows]
        return self._write(folder, f"part-{stamp:020d}-{uuid.uuid4().hex[:8]}.parquet", pa.Table.from_pylist(records))

    def _write(self, folder: str, name: str, table: pa.Table) -> str:
        self.fs.create_dir(folder, recursive=True)
        final = f"{folder}/{name}"
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        with self.fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        self.fs.move(tmp, final)
        return final

    def parts(self, table: str, search_id: str | None = None) -> list[str]:
        """The visible Parquet files of a table (of one search, or of all), oldest first.

        Only the files of a search's partition folder count: a file anywhere else under a table's folder is not
        a part of the ledger.
        """
        base = self.folder(table, search_id) if search_id else f"{self.root}/{table}"
        infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=search_id is None))
        files = [
            i.path for i in infos
            if i.type == pafs.FileType.File and i.path.endswith(".parquet") and not posixpath.basename(i.path).startswith(".")
            and posixpath.basename(posixpath.dirname(i.path)).startswith(f"{PARTITION}=")
        ]  # fmt: skip
        return sorted(files, key=posixpath.basename)

    def searches(self) -> list[str]:
        """Ids of every search that wrote a ``searches`` row."""
        infos = self.fs.get_file_info(pafs.FileSelector(f"{self.root}/searches", allow_not_found=True))
        prefix = f"{PARTITION}="
        return sorted(
            posixpath.basename(i.path)[len(prefix):] for i in infos
            if i.type == pafs.FileType.Directory and posixpath.basename(i.path).startswith(prefix)
        )  # fmt: skip

    def replace_parts(self, table: str, search_id: str, merged: pa.Table, old: list[str]) -> str | None:
        """Write ``merged`` as one file, then delete ``old`` (the parts it was made from).

        Its rows keep their ``ledger_ns``, so whatever was written meanwhile still wins over them; deleting
        after writing means a reader never misses a row.
        """
        path = None
        if merged.num_rows:
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-merged.parquet"
            if PARTITION in merged.column_names:
                merged = merged.drop_columns([PARTITION])
            path = self._write(self.folder(table, search_id), name, merged)
        for part in old:
            try:
                self.fs.delete_file(part)
            except FileNotFoundError:  # another compaction got there first
                pass
        return path
