"""Reading the store as tables: SQL through DuckDB, a search's trials, and mean ± std over seeds."""

from __future__ import annotations

import math
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from results.store import TABLES, Store
from trainable.config import TrainConfig

# Columns of the trials table that are not configuration.
_CONFIG = set(TrainConfig.model_fields)


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection where ``searches``, ``trials`` and ``epochs`` are the store's tables."""
    con = duckdb.connect()
    for table in TABLES:
        data = store.read(table)
        if data.num_columns == 0:
            data = pa.table({"search_id": pa.array([], pa.string())})
        con.register(table, data)
    return con


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, numbers right-aligned; floats below 1 (learning rates, thresholds) to three
    significant digits, so that sampled values stay distinguishable, larger ones (top-1 %) to two decimals."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            if math.isnan(value):
                return "nan"
            return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}".rstrip("0").rstrip(".")
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(columns))]
    fmt = lambda values: "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric))  # noqa: E731
    lines = [fmt(columns), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in text]
    return "\n".join(lines)


def query(store: Store, sql: str) -> str:
    con = connect(store)
    result = con.execute(sql)
    return format_rows([d[0] for d in result.description], result.fetchall())


def varied_columns(store: Store, search_id: str) -> list[str]:
    """Config columns whose value differs between the search's trials (the searched parameters and seed)."""
    trials = store.read("trials", search_id)
    out = []
    for name in trials.column_names:
        if name in _CONFIG and len(set(map(str, trials.column(name).to_pylist()))) > 1:
            out.append(name)
    return out


def show(store: Store, search_id: str, metric: str | None = None, mode: str | None = None) -> str:
    """The search's trials, best first by the search's metric, with what varied and how each trial ended."""
    con = connect(store)
    found = con.execute("SELECT metric, mode FROM searches WHERE search_id = ?", [search_id]).fetchall()
    if not found:
        known = [r[0] for r in con.execute("SELECT search_id FROM searches ORDER BY started_at").fetchall()]
        raise KeyError(f"no search {search_id!r} in {store.uri}; searches: {', '.join(known) or 'none'}")
    metric = metric or found[0][0]
    mode = mode or found[0][1]
    params = [c for c in varied_columns(store, search_id) if c != "seed"]
    columns = ["trial_id", *params, "seed", "status", "stopped_at_epoch", "epochs_run", f"final_{metric}", f"best_{metric}", "wall_s"]
    order = "DESC" if mode == "max" else "ASC"
    cols = ", ".join(f'"{c}"' for c in columns)
    result = con.execute(
        f'SELECT {cols} FROM trials WHERE search_id = ? ORDER BY "best_{metric}" {order} NULLS LAST', [search_id]
    )
    return format_rows(columns, result.fetchall())


def resolve(store: Store, search: str) -> str:
    """A search id, or the latest search of that name (``tau`` also finds ``paper-tau``)."""
    con = connect(store)
    rows = con.execute(
        "SELECT search_id FROM searches WHERE search_id = ? OR name = ? OR name = ? ORDER BY started_at DESC",
        [search, search, f"paper-{search}"],
    ).fetchall()
    if not rows:
        known = [r[0] for r in con.execute("SELECT DISTINCT name FROM searches ORDER BY name").fetchall()]
        raise KeyError(f"no search {search!r} in {store.uri}; names: {', '.join(known) or 'none'}")
    return rows[0][0]


def seed_table(store: Store, search: str, metric: str = "top1") -> str:
    """The paper's kind of table: per configuration, mean ± std of the final metric over seeds."""
    search_id = resolve(store, search)
    params = [c for c in varied_columns(store, search_id) if c != "seed"]
    con = connect(store)
    keys = ", ".join(f'"{c}"' for c in params) or "'all' AS configuration"
    group = ", ".join(f'"{c}"' for c in params) or "1"
    value = f'"final_{metric}"'
    rows = con.execute(
        f"SELECT {keys}, avg({value}), stddev_samp({value}), count({value}), count(*) FILTER (WHERE status != 'completed') "
        f"FROM trials WHERE search_id = ? GROUP BY {group} ORDER BY {group}",
        [search_id],
    ).fetchall()
    columns = [*(params or ["configuration"]), f"{metric} mean ± std", "seeds", "not completed"]
    out = []
    for row in rows:
        *key, mean, std, n, unfinished = row
        cell = "" if mean is None else f"{mean:.1f}" + ("" if std is None else f" ± {std:.1f}")
        out.append([*key, cell, n, unfinished])
    return f"search {search_id}\n" + format_rows(columns, out)
