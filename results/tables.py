"""The store's ledger read as the tables users query, through DuckDB over the Parquet files themselves.

The ledger holds every row ever written (``results.store``); the tables keep the latest row per key and
derive each trial's summary from its epochs, so a summary can never disagree with the epochs table and
nothing needs rewriting when an epoch arrives:

- ``epochs``: one row per (search, trial, epoch), the latest attempt's. ``stage`` says what the row trained:
  NULL for a single-stage method, ``student`` for a pipeline method's own training (TimeBalance), and a stage's
  name on the rows of a shared stage result. Those rows have no ``trial_id`` and carry the result's key in
  ``stage_key`` (NULL on a trial's own rows): they are written once, by the trial that built the result (the
  ``stages`` table's ``built_by``), and belong to no trial, so one per (search, stage key, epoch) is kept. Stores
  from before stages have no ``stage`` column: it reads as NULL; a stage result's rows from before ``stage_key``
  (under the id ``stage-<stage>-<key>``) read as today's;
- ``trials``: the latest event of each trial (its config, status, wall time), plus ``epochs_run``,
  ``final_<m>`` (the last epoch's value of every metric; for a stopped trial, of the epoch it was stopped at), ``best_<m>`` (of top1, top5, aux_top1, loss and
  the search's own metric) and ``best_epoch`` (the first epoch with the best value of the search's metric),
  from the trial's own epoch rows only (a stage result's rows have no trial id, so they count for none); and from
  ``stages``: ``stages_built`` and ``stages_reused``, the names of the stages whose results the trial trained
  and those it found trained by another (comma-separated, in the order the trial got them; NULL for none),
  and ``stage_keys``, every stage it used as ``<stage>=<key>`` in that order: two trials with the same
  ``stage_keys`` trained their students from the same teachers;
- ``stages``: one row per (search, trial, stage) that a trial used: ``stage_key``, ``reused``, ``built_by``,
  ``build_s``, ``waited_s``, ``path``, ``recorded_at``; empty in a store from before stages;
- ``searches``: the latest row of each search, with ``num_trials`` counted from ``trials``.

The views read only the files of the search asked for (its hive partition), and on a local store only the columns
a query uses (an ``s3://`` store's parts are read whole by pyarrow: ``_latest``); a
part that cannot be read is left out with a warning naming it (``Store.readable_parts``), so one bad file costs
only its own rows, and readers and compaction agree on which files are parts (``Store.parts``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

import duckdb
import pyarrow as pa

from results.store import KEYS, ORDER, PARTITION, TABLES, Store
from trainable.config import RENAMED_KEYS, RENAMED_VALUES
from trainable.metrics import METRICS

# The trial summary's best values: higher is better for accuracies, lower for losses.
BEST = {"top1": "max", "top5": "max", "aux_top1": "max", "loss": "min"}
# Metrics whose last value is a trial's final_<m> (the epoch itself is epochs_run).
FINAL = tuple(m for m in METRICS if m != "epoch")
# Columns the views read that older stores lack (written before they existed): NULL there, of this type.
LATER = {
    "epochs": {"stage": "VARCHAR", "stage_key": "VARCHAR"},
    "stages": {"stage_key": "VARCHAR", "reused": "BOOLEAN", "recorded_at": "VARCHAR"},
    "trials": {"revision": "BIGINT"},
}
# Columns renamed since (a config key: ``trainable.config.RENAMED_KEYS``; the labeled subset's hash), read from an
# older part under today's name, the two merged where a search's parts have both; and config values renamed.
RENAMED = {"trials": RENAMED_KEYS, "epochs": {"split_hash": "subset_hash"}}
RENAMED_IN = {"trials": RENAMED_VALUES}
# The trial columns derived from the stages table.
STAGE_COLUMNS = ("stages_built", "stages_reused", "stage_keys")

T = TypeVar("T")


def _files(store: Store, table: str, search_id: str | None, files: list[str] | None) -> list[str]:
    """The store paths of the parts to scan: the given ones, or the readable parts of the search (or of all).

    Always a list, never a glob: DuckDB's ``*.parquet`` also matches the dot-files that are no parts, and the
    list is what a locked connection allows (``connect``).
    """
    return store.readable_parts(table, search_id) if files is None else files


def _source(paths: list[str]) -> str | None:
    """The SQL list of files for ``read_parquet``, or None for none."""
    return "[" + ", ".join(_literal(p) for p in paths) + "]" if paths else None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _latest(con: duckdb.DuckDBPyConnection, view: str, table: str, store: Store, paths: list[str], materialize: bool) -> list[str]:
    """Create ``view``: the latest row per key of ``table`` (its parts ``paths``); return its columns.

    ``materialize`` reads the files once into a temporary table, for callers that scan a table several times
    (the trials view reads the epochs twice): a search's thousands of small parts are opened only once. The
    ``LATER`` columns are always there.

    A local store's parts are DuckDB's to read (only the columns a query uses). Any other store's (``s3://…``) are
    read by pyarrow, whose filesystems come with the install, and handed to DuckDB as one Arrow table: DuckDB would
    read them through its ``httpfs`` extension, which it downloads on first use, and a cluster without internet
    access could not read its own results.
    """
    if not paths:
        keys = ", ".join(f"NULL::{'BIGINT' if k == 'epoch' else 'VARCHAR'} AS {k}" for k in KEYS[table])
        scan = f"SELECT {keys}, NULL::BIGINT AS {ORDER} WHERE false"
    elif store.local:
        scan = (
            f"SELECT {PARTITION}, * EXCLUDE ({PARTITION}) FROM read_parquet({_source(paths)}, hive_partitioning = true, "
            f"union_by_name = true, hive_types = {{'{PARTITION}': VARCHAR}})"
        )
        if materialize:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {view}_rows AS {scan}")
            scan = f"SELECT * FROM {view}_rows"
    else:
        con.register(f"{view}_arrow", store.read_parts(paths))
        con.execute(f"CREATE OR REPLACE TEMP TABLE {view}_rows AS SELECT {PARTITION}, * EXCLUDE ({PARTITION}) FROM {view}_arrow")
        con.unregister(f"{view}_arrow")
        scan = f"SELECT * FROM {view}_rows"
    columns = [row[0] for row in con.execute(f"DESCRIBE {scan}").fetchall()]
    missing = [c for c in LATER.get(table, {}) if c not in columns]
    if missing:  # before the latest row is picked: a key may be a later column
        added = ", ".join(f"NULL::{LATER[table][c]} AS {_ident(c)}" for c in missing)
        scan, columns = f"SELECT *, {added} FROM ({scan})", columns + missing
    if table == "epochs":
        scan = _stage_rows_by_key(scan)
    latest = f"{scan} QUALIFY row_number() OVER (PARTITION BY {', '.join(KEYS[table])} ORDER BY {ORDER} DESC) = 1"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {latest}")
    return _renamed(con, view, table, latest, columns)[1]


def _stage_rows_by_key(scan: str) -> str:
    """``scan`` with a stage result's epoch rows from before ``stage_key`` (stored under the made-up trial id
    ``stage-<stage>-<key>``) read as today's: no trial id, the key in ``stage_key``."""
    old = "stage_key IS NULL AND stage IS NOT NULL AND stage <> 'student' AND starts_with(trial_id, 'stage-' || stage || '-')"
    return (
        f"SELECT * FROM (SELECT * REPLACE (CASE WHEN {old} THEN NULL ELSE trial_id END AS trial_id, "
        f"CASE WHEN {old} THEN substr(trial_id, length(stage) + 8) ELSE stage_key END AS stage_key) FROM ({scan}))"
    )  # a query of its own, so that the latest row's QUALIFY partitions by these columns, not the ones read


def _renamed(con: duckdb.DuckDBPyConnection, view: str, table: str, latest: str, columns: list[str]) -> tuple[str, list[str]]:
    """``view`` again with ``RENAMED`` columns under today's names and ``RENAMED_IN`` values as today's, for a store
    with parts written before a rename; the query and columns it then has."""
    old = {o: n for o, n in RENAMED.get(table, {}).items() if o in columns}
    values = {k: m for k, m in RENAMED_IN.get(table, {}).items() if k in columns}
    if not old and not values:
        return latest, columns
    exprs = [f"coalesce({_ident(n)}, {_ident(o)}) AS {_ident(n)}" if n in columns else f"{_ident(o)} AS {_ident(n)}" for o, n in old.items()]
    for key, mapping in values.items():
        cases = " ".join(f"WHEN {_literal(o)} THEN {_literal(n)}" for o, n in mapping.items())
        exprs.append(f"CASE {_ident(key)} {cases} ELSE {_ident(key)} END AS {_ident(key)}")
    dropped = [*old, *(n for n in old.values() if n in columns), *values]
    latest = f"SELECT * EXCLUDE ({', '.join(map(_ident, dropped))}), {', '.join(exprs)} FROM ({latest})"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {latest}")
    return latest, [c for c in columns if c not in dropped] + [*old.values(), *values]


def connect(
    store: Store, search_id: str | None = None, files: dict[str, list[str]] | None = None, locked: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose views ``searches``, ``trials``, ``epochs``, ``stages`` are the store's tables.

    ``search_id`` limits every view to that search's files; ``files`` (per table) to exactly those files,
    read once into memory (compaction reads a fixed set of parts). The internal ``_<table>`` views keep
    ``ledger_ns``. A part that cannot be read is left out, with a warning (``Store.readable_parts``).

    ``locked``: once the views exist, the connection may open no file but the parts they read, install or load
    no extension and change no setting (DuckDB's ``enable_external_access = false`` with ``allowed_paths`` those
    parts, then ``lock_configuration``), for SQL from someone who should only read the tables. DuckDB still lets
    ``COPY … TO`` overwrite an allowed path: ``results.report.query`` refuses every statement but SELECT first.
    """
    con = duckdb.connect()
    paths = {t: _files(store, t, search_id, None if files is None else files.get(t, [])) for t in TABLES}
    materialize = files is not None
    search_columns = _latest(con, "_searches_latest", "searches", store, paths["searches"], materialize)
    epoch_columns = _latest(con, "_epochs", "epochs", store, paths["epochs"], materialize)
    event_columns = _latest(con, "_trial_events", "trials", store, paths["trials"], materialize)
    _latest(con, "_stages", "stages", store, paths["stages"], materialize)
    _latest(con, "_runs", "runs", store, paths["runs"], materialize)

    goals = dict(BEST)
    described = "metric" in search_columns
    if described:
        for metric, mode in con.execute("SELECT DISTINCT metric, mode FROM _searches_latest WHERE metric IS NOT NULL").fetchall():
            goals.setdefault(metric, mode)
    derived = ["epochs_run", *(f"final_{m}" for m in FINAL), *(f"best_{m}" for m in goals), "best_epoch", *STAGE_COLUMNS]

    def column(m: str) -> str:  # a metric no epoch has reported yet (a search whose trials all failed) is NULL
        return f"e.{_ident(m)}" if m in epoch_columns else "NULL::DOUBLE"

    # A stopped trial is summarised by the epochs up to the one its scheduler judged (``stopped_at_epoch``): the
    # epoch its process was computing when it was ended may have landed too, or not, depending on timing.
    judged = "e.epoch <= coalesce(t.stopped_at_epoch, e.epoch)" if "stopped_at_epoch" in event_columns else "true"
    summary = ["max(e.epoch) AS epochs_run"]
    summary += [f"arg_max({column(m)}, e.epoch) FILTER (WHERE {judged}) AS {_ident('final_' + m)}" for m in FINAL]
    summary += [
        f"{mode}({column(m)}) FILTER (WHERE NOT isnan({column(m)}::DOUBLE) AND {judged}) AS {_ident('best_' + m)}"
        for m, mode in goals.items()
    ]
    # The first epoch with the best value of the search's own metric: ties go to the earlier epoch.
    pick = " ".join(
        f"WHEN s.metric = {_literal(m)} THEN (CASE WHEN s.mode = 'max' THEN {column(m)} ELSE -{column(m)} END)"
        for m in goals
    )
    metric_value = f"CASE {pick} END" if described else "NULL::DOUBLE"
    summary.append(f"arg_max(e.epoch, ({metric_value}, -e.epoch)) FILTER (WHERE NOT isnan(({metric_value})::DOUBLE) AND {judged}) AS best_epoch")
    keep = [c for c in event_columns if c not in derived]  # a compacted row carries the derived columns
    in_order = f"ORDER BY recorded_at, {ORDER}"  # the order the trial recorded them
    # The summaries are joined to the trial events: the rows of a stage result (no trial id) count for none.
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW _trials AS
        WITH summary AS (
            SELECT e.search_id, e.trial_id, {", ".join(summary)}
            FROM _epochs e LEFT JOIN _searches_latest s USING (search_id) LEFT JOIN _trial_events t USING (search_id, trial_id)
            GROUP BY e.search_id, e.trial_id
        ), used AS (
            SELECT search_id, trial_id,
                string_agg(stage, ',' {in_order}) FILTER (WHERE NOT reused) AS stages_built,
                string_agg(stage, ',' {in_order}) FILTER (WHERE reused) AS stages_reused,
                string_agg(stage || '=' || stage_key, ',' {in_order}) AS stage_keys
            FROM _stages GROUP BY search_id, trial_id
        )
        SELECT {", ".join("t." + _ident(c) for c in keep)}, summary.* EXCLUDE (search_id, trial_id),
            used.* EXCLUDE (search_id, trial_id)
        FROM _trial_events t LEFT JOIN summary USING (search_id, trial_id) LEFT JOIN used USING (search_id, trial_id)"""
    )
    stale = " EXCLUDE (num_trials)" if "num_trials" in search_columns else ""  # a compacted row carries it
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW _searches AS
        SELECT s.*{stale}, (SELECT count(*) FROM _trials t WHERE t.search_id = s.search_id) AS num_trials
        FROM _searches_latest s"""
    )
    for table in TABLES:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * EXCLUDE ({ORDER}) FROM _{table}")
    if locked:
        # a remote store's rows are in memory already: the connection may then open no file at all
        con.execute("SET allowed_paths = ?", [[p for table in TABLES for p in paths[table]] if store.local else []])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def retrying(fn: Callable[[], T], attempts: int = 5) -> T:
    """Run a read; a part deleted by a compaction between the listing and its read is read again."""
    for attempt in range(attempts):
        try:
            return fn()
        except (duckdb.IOException, FileNotFoundError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def read(store: Store, table: str, search_id: str | None = None) -> pa.Table:
    """One table (latest rows, summaries derived) as Arrow, in key order (a trial's epochs in order): for code that
    wants the rows, not SQL."""
    order = ", ".join(KEYS[table])
    return retrying(lambda: connect(store, search_id).sql(f"SELECT * FROM {table} ORDER BY {order}").to_arrow_table())


def compact(store: Store, search_id: str) -> dict[str, int]:
    """Merge the search's parts into one file per table; return the rows each table keeps.

    Reads exactly the readable parts listed at the start, so parts written meanwhile stay and still win, and a
    part that cannot be read stays where it is, for ``verify`` to find (it is warned about, not merged).
    """
    parts = {t: store.readable_parts(t, search_id) for t in TABLES}
    con = connect(store, files=parts)
    # in key order (a trial's epochs in order): a compacted part reads as a plain table, with pyarrow too
    merged = {table: con.sql(f"SELECT * FROM _{table} ORDER BY {', '.join(KEYS[table])}").to_arrow_table() for table in TABLES}
    for table in TABLES:  # every table is read before any part is deleted: the views read across tables
        if parts[table] and parts[table] != [p for p in parts[table] if p.endswith("-merged.parquet")][:1]:
            store.replace_parts(table, search_id, merged[table], parts[table])
    return {table: merged[table].num_rows for table in TABLES}


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Column names and rows of a query."""
    result = con.execute(sql, params or [])
    return [d[0] for d in result.description], result.fetchall()
