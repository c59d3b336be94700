"""The Parquet store as an append-only ledger: four tables (``searches``, ``trials``, ``epochs``, ``stages``) under one
folder or URI.

Every write is a new, small Parquet file (a *part*) in the search's hive partition,
``<store>/<table>/search_id=<id>/part-<ns>-<random>.parquet``: nothing ever rewrites earlier rows, so a
write costs the same at the first report as at the twenty-thousandth, and a crash can lose nothing that
was written. Each file is written under a hidden temporary name and then moved into place, so a reader
never sees half a file. Every row carries ``ledger_ns`` (when it was written); where a key has several
rows (a trial's start and end events, an epoch that a retried attempt reported again), the latest wins.

``compact`` merges a search's parts into one file per table, keeping only the winning rows, and is run
when a search ends and by ``python -m results compact``. It writes the merged file, reads it back, and only
then deletes the parts it merged, so a reader sees either the parts, or both (the same rows twice, which the
latest-wins views collapse), never neither, and a bad write costs no search its history. The views that do the
collapsing, and derive each trial's summary (``epochs_run``, ``final_*``, ``best_*``) from its epochs, are in
``results.tables``.

A part that cannot be read (zero bytes, truncated, a garbled footer: a crash, a full disk, an interrupted copy)
is left out by every reader with one warning naming it, and the rest of the store reads as before;
``python -m results verify`` lists such parts and ``--quarantine`` moves them to ``<store>/quarantine/``.

Writers use ``pyarrow.fs`` (a local folder, ``s3://…``). Readers are DuckDB over a local store's files themselves;
a remote store's parts are read by pyarrow (``Store.read_parts``) and handed to DuckDB, which would otherwise need
its ``httpfs`` extension, downloaded on first use. An S3 store finds its server and keys the way AWS tools do:
``AWS_ENDPOINT_URL`` (for MinIO, moto or any S3-compatible server), ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` (or a profile, or an instance role) from the environment.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TABLES = ("searches", "trials", "epochs", "stages", "runs")
# The columns that identify a row of each table: of several rows with the same key, the latest wins. A ``stages`` row
# is a pipeline stage's result that a trial used (built, or found built): one per (trial, stage).
KEYS = {
    "searches": ("search_id",),
    "trials": ("search_id", "trial_id"),
    "epochs": ("search_id", "trial_id", "stage_key", "epoch"),  # a stage result's rows: no trial id, its key
    "stages": ("search_id", "trial_id", "stage"),
    # One row per ``search run`` of a search, never replaced: the history of what ran it (``results history``).
    "runs": ("search_id", "run_id"),
}
ORDER = "ledger_ns"  # nanoseconds since the epoch at which the row was written
PARTITION = "search_id"
# Where results go unless a command is told otherwise.
DEFAULT_STORE = os.environ.get("ACTNET_STORE", "store")
# Where ``verify --quarantine`` moves unreadable parts: ``<store>/quarantine/<table>/search_id=<id>/``, beside the
# tables and so outside every reader's listing.
QUARANTINE = "quarantine"

log = logging.getLogger(__name__)


MAX_SEARCH_ID = 200


class StoreError(ValueError):
    """What the store refuses: a name it cannot hold (a search id that is not a valid folder name), a path that is
    no store, a merged file that did not read back."""


@dataclass(frozen=True)
class Unreadable:
    """A part that does not open as Parquet, and why."""

    path: str  # on the store's filesystem
    uri: str  # the same, as the user names it (``s3://…``)
    size: int
    table: str
    search_id: str
    error: str

    def __str__(self) -> str:
        return f"{self.uri} ({self.size} bytes, table {self.table}, search {self.search_id}): {self.error}"


# The footer check of each part this process has looked at, by (store, path, size, mtime): the error, or None for
# a part that opens. Parts are never rewritten, so a part is checked (and, if bad, warned about) once per process.
_footers: dict[tuple[str, str, int, int | None], str | None] = {}


def check_search_id(search_id: str) -> str:
    """A search id becomes a folder name ``search_id=<id>``: no separators, no '=', nothing hidden."""
    if not search_id or search_id.startswith(".") or any(c in search_id for c in "/\\=*?[]\n"):
        raise StoreError(f"search name {search_id!r}: use letters, digits, '-', '_' and '.', not starting with '.'")
    if len(search_id.encode()) > MAX_SEARCH_ID:  # a folder name holds 255 bytes, with 'search_id=' and Train's 'train-…'
        raise StoreError(f"search name {search_id[:40]}…: {len(search_id.encode())} bytes, at most {MAX_SEARCH_ID}")
    return search_id


class Store:
    """A folder or URI holding the tables."""

    def __init__(self, uri: str | os.PathLike[str]) -> None:
        uri = str(uri)
        if "://" not in uri:
            uri = os.path.abspath(os.path.expanduser(uri))
        else:  # the root from_uri gives ends in no '/': neither may the URI, which ``uri_of`` appends to likewise
            scheme, sep, rest = uri.partition("://")
            uri = scheme + sep + rest.rstrip("/")
        self.uri = uri
        self.fs, self.root = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)

    @classmethod
    def existing(cls, uri: str | os.PathLike[str]) -> Store:
        """The store at ``uri``, which must already hold a table: for readers, where a mistyped path would otherwise
        read as an empty store (a writer's ``Store(uri)`` creates its folders on the first write)."""
        try:
            store = cls(uri)
            found = store.fs.get_file_info([store.root, *(f"{store.root}/{t}" for t in TABLES)])
        except (ValueError, OSError) as exc:  # pyarrow's: an unknown scheme, no bucket, a bucket it cannot reach
            raise StoreError(f"{uri}: cannot open it ({one_line(exc)}); a store is a folder or a pyarrow.fs URI (s3://bucket/path)") from exc
        if found[0].type != pafs.FileType.Directory:
            raise StoreError(f"{store.uri}: no such store (no folder there)")
        if all(info.type != pafs.FileType.Directory for info in found[1:]):
            raise StoreError(f"{store.uri}: not a store (none of the folders {', '.join(TABLES)} in it)")
        return store

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    @property
    def local(self) -> bool:
        """Whether the store is a folder of this machine's (or an NFS mount), which DuckDB reads by itself."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def read_parts(self, paths: list[str]) -> pa.Table:
        """The rows of these parts as one Arrow table, with the ``search_id`` of each part's partition folder, the
        columns of all parts (NULL where a part lacks one, as DuckDB's ``union_by_name``).

        The parts are fetched concurrently: on an object store each is a request, and a search has thousands. A
        part deleted meanwhile (by a compaction, whose merged file holds its rows) raises ``FileNotFoundError``, for
        the reader to list again (``results.tables.retrying``).
        """

        def one(path: str) -> pa.Table:
            with self.fs.open_input_file(path) as f:
                table = pq.read_table(f)
            partition = posixpath.basename(posixpath.dirname(path))[len(PARTITION) + 1:]
            if PARTITION in table.column_names:
                table = table.drop_columns([PARTITION])
            return table.append_column(PARTITION, pa.array([partition] * table.num_rows, pa.string()))

        with ThreadPoolExecutor(max_workers=min(32, len(paths)) or 1) as pool:
            tables = list(pool.map(one, paths))
        return pa.concat_tables(tables, promote_options="permissive")

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

    def _write(self, folder: str, name: str, table: pa.Table, read_back: bool = False) -> str:
        """Write ``table`` under a hidden temporary name (a dot-file, which is never a part) and move it into place;
        with ``read_back``, only once it reads back whole with all its rows. A failed write leaves nothing behind."""
        self.fs.create_dir(folder, recursive=True)
        final = f"{folder}/{name}"
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as out:
                pq.write_table(table, out)
            if read_back:
                try:
                    with self.fs.open_input_file(tmp) as f:
                        rows = pq.ParquetFile(f).read().num_rows
                except Exception as exc:  # whatever pyarrow says of a file it cannot decode
                    raise StoreError(f"{final}: the merged file does not read back ({one_line(exc)})") from exc
                if rows != table.num_rows:
                    raise StoreError(f"{final}: the merged file reads back {rows} rows of {table.num_rows}")
            self.fs.move(tmp, final)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except FileNotFoundError:  # the write failed before creating it
                pass
            raise
        return final

    def uri_of(self, path: str) -> str:
        """The URI a user names a path of this store's filesystem by (``s3://bucket/key`` for ``bucket/key``)."""
        return self.uri + path[len(self.root):] if "://" in self.uri else path

    def _listing(self, table: str, search_id: str | None) -> list[pafs.FileInfo]:
        """The parts of a table (of one search, or of all), oldest first: the ``.parquet`` files of a search's
        partition folder. A file anywhere else under a table's folder is not a part of the ledger, nor is a
        dot-file: the store's own temporaries (``.<name>.<random>.tmp``), and the ``._<name>`` copies of macOS's
        copy tools."""
        base = self.folder(table, search_id) if search_id else f"{self.root}/{table}"
        infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=search_id is None))
        files = [
            i for i in infos
            if i.type == pafs.FileType.File and i.path.endswith(".parquet") and not posixpath.basename(i.path).startswith(".")
            and posixpath.basename(posixpath.dirname(i.path)).startswith(f"{PARTITION}=")
        ]  # fmt: skip
        return sorted(files, key=lambda i: posixpath.basename(i.path))

    def parts(self, table: str, search_id: str | None = None) -> list[str]:
        """The paths of a table's parts (of one search, or of all), oldest first, readable or not."""
        return [i.path for i in self._listing(table, search_id)]

    def readable_parts(self, table: str, search_id: str | None = None) -> list[str]:
        """The parts every reader reads (and compaction merges): those whose Parquet footer opens.

        Each part that does not is left out with one warning per process, naming it, its size and its search, so
        that one bad file costs only its own rows. The check reads only the footer (its last bytes), once per part
        and process; a part with a sound footer and garbled pages gets past it, and ``verify`` finds it.
        """
        readable = []
        for info in self._listing(table, search_id):
            key = (self.uri, info.path, info.size, info.mtime_ns)
            if key not in _footers:
                try:
                    _footers[key] = self._problem(info.path, thorough=False)
                except FileNotFoundError:  # deleted by a compaction since the listing: its rows are in the merged file
                    continue
                if _footers[key] is not None:
                    log.warning("skipping unreadable part %s (`python -m results verify --quarantine` moves it aside)",
                                self._unreadable(info, table, _footers[key]))  # fmt: skip
            if _footers[key] is None:
                readable.append(info.path)
        return readable

    def unreadable(self, table: str, search_id: str | None = None) -> list[Unreadable]:
        """The parts of a table (of one search, or of all) that do not read in full: a bad footer, or pages that
        do not decode. Reads every part whole, for ``verify``."""
        bad = []
        for info in self._listing(table, search_id):
            try:
                error = self._problem(info.path, thorough=True)
            except FileNotFoundError:
                continue
            if error is not None:
                bad.append(self._unreadable(info, table, error))
        return bad

    def _problem(self, path: str, thorough: bool) -> str | None:
        """Why ``path`` does not open as Parquet (its footer; with ``thorough``, all its data), or None."""
        try:
            with self.fs.open_input_file(path) as f:
                parquet = pq.ParquetFile(f)
                if thorough:
                    parquet.read()
        except FileNotFoundError:
            raise
        except Exception as exc:  # pyarrow raises OSError, ArrowInvalid, ... for the ways a file can be garbled
            return one_line(exc)
        return None

    def _unreadable(self, info: pafs.FileInfo, table: str, error: str) -> Unreadable:
        partition = posixpath.basename(posixpath.dirname(info.path))
        return Unreadable(info.path, self.uri_of(info.path), info.size, table, partition[len(PARTITION) + 1:], error)

    def quarantine(self, bad: Unreadable) -> str:
        """Move an unreadable part to ``<store>/quarantine/<table>/search_id=<id>/`` and return where it went; never
        deleted, so what can be recovered from it still can, and under another name if that one is taken."""
        folder = f"{self.root}/{QUARANTINE}/{bad.table}/{PARTITION}={bad.search_id}"
        self.fs.create_dir(folder, recursive=True)
        target = f"{folder}/{posixpath.basename(bad.path)}"
        if self.fs.get_file_info(target).type != pafs.FileType.NotFound:
            target = f"{target}.{uuid.uuid4().hex[:8]}"
        self.fs.move(bad.path, target)
        return self.uri_of(target)

    def searches(self) -> list[str]:
        """Ids of every search that wrote a ``searches`` row."""
        infos = self.fs.get_file_info(pafs.FileSelector(f"{self.root}/searches", allow_not_found=True))
        prefix = f"{PARTITION}="
        return sorted(
            posixpath.basename(i.path)[len(prefix):] for i in infos
            if i.type == pafs.FileType.Directory and posixpath.basename(i.path).startswith(prefix)
        )  # fmt: skip

    def replace_parts(self, table: str, search_id: str, merged: pa.Table, old: list[str]) -> str | None:
        """Write ``merged`` as one file, read it back, then delete ``old`` (the parts it was made from).

        Its rows keep their ``ledger_ns``, so whatever was written meanwhile still wins over them; deleting
        after writing means a reader never misses a row, and after reading back that a bad write (``StoreError``)
        keeps ``old``.
        """
        path = None
        if merged.num_rows:
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-merged.parquet"
            if PARTITION in merged.column_names:
                merged = merged.drop_columns([PARTITION])
            path = self._write(self.folder(table, search_id), name, merged, read_back=True)
        for part in old:
            try:
                self.fs.delete_file(part)
            except FileNotFoundError:  # another compaction got there first
                pass
        return path


def one_line(exc: BaseException) -> str:
    """An exception's message on one line: pyarrow's and DuckDB's span several, and DuckDB's line of carets under
    the SQL points at nothing once joined."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip(" ^"))
