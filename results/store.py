"""The Parquet store: three tables (``searches``, ``trials``, ``epochs``) under one folder or URI.

Each search writes its own file in each table (``<store>/<table>/<search_id>.parquet``), so two searches
never write the same file, and each write goes to a temporary name that is then moved into place, so a
reader never sees half a file. Any ``pyarrow.fs`` URI works (a local folder, ``s3://…``).
Readers need nothing of this project: ``pyarrow.parquet.read_table("<store>/trials")``,
``pandas.read_parquet``, or DuckDB's ``read_parquet('<store>/trials/*.parquet', union_by_name=true)``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TABLES = ("searches", "trials", "epochs")
# Where results go unless a command is told otherwise.
DEFAULT_STORE = os.environ.get("ACTNET_STORE", "store")


class Store:
    """A folder or URI holding the three tables."""

    def __init__(self, uri: str | os.PathLike[str]) -> None:
        uri = str(uri)
        if "://" not in uri:
            uri = os.path.abspath(os.path.expanduser(uri))
        self.uri = uri
        self.fs, self.root = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def path(self, table: str, search_id: str) -> str:
        return f"{self.root}/{table}/{search_id}.parquet"

    def write(self, table: str, search_id: str, rows: list[dict[str, Any]]) -> None:
        """Replace this search's file of ``table`` with ``rows``, atomically."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        self.fs.create_dir(f"{self.root}/{table}", recursive=True)
        final = self.path(table, search_id)
        tmp = f"{self.root}/{table}/.{search_id}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(tmp) as out:
            pq.write_table(pa.Table.from_pylist(rows), out)
        self.fs.move(tmp, final)

    def read(self, table: str, search_id: str | None = None) -> pa.Table:
        """One table over all searches (columns of different searches unified), or one search's rows."""
        if search_id is not None:
            paths = [self.path(table, search_id)]
            if self.fs.get_file_info(paths[0]).type == pafs.FileType.NotFound:
                return pa.table({})
        else:
            selector = pafs.FileSelector(f"{self.root}/{table}", allow_not_found=True)
            paths = sorted(
                info.path for info in self.fs.get_file_info(selector)
                if info.path.endswith(".parquet") and not os.path.basename(info.path).startswith(".")
            )
        tables = [pq.read_table(p, filesystem=self.fs) for p in paths]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="permissive")
