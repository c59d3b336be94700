"""Reading the store as tables: SQL through DuckDB, a search's trials, and mean ± std over seeds."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

import duckdb

from results.store import Store
from results.tables import connect, retrying
from trainable.config import TrainConfig

# Columns of the trials table that are not configuration.
_CONFIG = set(TrainConfig.model_fields)


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, numbers right-aligned; floats below 1 (learning rates, thresholds) to three
    significant digits, so that sampled values stay distinguishable, larger ones (top-1 %) to two decimals."""

    text = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(columns))]
    fmt = lambda values: "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric))  # noqa: E731
    lines = [fmt(columns), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in text]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def query(store: Store, sql: str) -> str:
    def run() -> str:
        result = connect(store).execute(sql)
        return format_rows([d[0] for d in result.description], result.fetchall())

    return retrying(run)


def varied_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Config columns whose value differs between the trials of ``con``'s search (the searched parameters and seed)."""
    trials = con.sql("SELECT * FROM trials").to_arrow_table()
    return [name for name in trials.column_names if name in _CONFIG and len(set(map(str, trials.column(name).to_pylist()))) > 1]


def open_search(store: Store, search_id: str) -> duckdb.DuckDBPyConnection:
    """A connection that reads only this search's files."""
    if search_id not in store.searches():
        raise KeyError(f"no search {search_id!r} in {store.uri}; searches: {', '.join(store.searches()) or 'none'}")
    return connect(store, search_id)


def show(store: Store, search_id: str, metric: str | None = None, mode: str | None = None) -> str:
    """The search's trials, best first by the search's metric, with what varied and how each trial ended."""

    def run() -> str:
        con = open_search(store, search_id)
        found = con.execute("SELECT metric, mode FROM searches").fetchall()
        chosen, direction = metric or found[0][0], mode or found[0][1]
        params = [c for c in varied_columns(con) if c != "seed"]
        columns = ["trial_id", *params, "seed", "status", "stopped_at_epoch", "epochs_run", f"final_{chosen}", f"best_{chosen}", "wall_s"]
        order = "DESC" if direction == "max" else "ASC"
        cols = ", ".join(f'"{c}"' for c in columns)
        result = con.execute(f'SELECT {cols} FROM trials ORDER BY "best_{chosen}" {order} NULLS LAST, trial_id')
        return format_rows(columns, result.fetchall())

    return retrying(run)


def resolve(store: Store, search: str) -> str:
    """A search id, or the latest search of that name (``tau`` also finds ``paper-tau``)."""
    if search in store.searches():
        return search

    def run() -> str:
        con = connect(store)
        rows = con.execute(
            "SELECT search_id FROM searches WHERE name = ? OR name = ? ORDER BY started_at DESC", [search, f"paper-{search}"]
        ).fetchall()
        if not rows:
            known = [r[0] for r in con.execute("SELECT DISTINCT name FROM searches ORDER BY name").fetchall()]
            raise KeyError(f"no search {search!r} in {store.uri}; names: {', '.join(known) or 'none'}")
        return rows[0][0]

    return retrying(run)


FORMATS = ("text", "markdown", "latex", "csv")


def seed_table(store: Store, search: str, metric: str = "top1", fmt: str = "text") -> str:
    """The paper's kind of table: per configuration, mean ± std of the final metric over seeds, the best
    configuration marked (by the search's direction for its own metric; lowest for a loss, else highest).

    ``fmt``: ``text`` (the terminal; the best mean starred), ``markdown`` and ``latex`` (for a paper or a
    README; the best in bold), ``csv`` (mean and std as numbers, and a ``best`` column).
    """
    if fmt not in FORMATS:
        raise KeyError(f"format {fmt!r}: allowed {', '.join(FORMATS)}")
    search_id = resolve(store, search)

    def run() -> tuple[list[str], list[tuple], str]:
        con = open_search(store, search_id)
        params = [c for c in varied_columns(con) if c != "seed"]
        keys = ", ".join(f'"{c}"' for c in params) or "'all' AS configuration"
        group = ", ".join(f'"{c}"' for c in params) or "1"
        value = f'"final_{metric}"'
        rows = con.execute(
            f"SELECT {keys}, avg({value}), stddev_samp({value}), count({value}), count(*) FILTER (WHERE status != 'completed') "
            f"FROM trials GROUP BY {group} ORDER BY {group}"
        ).fetchall()
        own, mode = con.execute("SELECT metric, mode FROM searches").fetchall()[0]
        return params, rows, direction(metric, own, mode)

    params, rows, mode = retrying(run)
    best = best_index([r[-4] for r in rows], mode)
    names = params or ["configuration"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*names, f"{metric}_mean", f"{metric}_std", "seeds", "not_completed", "best"])
        writer.writerows([*row, i == best] for i, row in enumerate(rows))
        return out.getvalue()
    columns = [*names, f"{metric} mean ± std", "seeds", "not completed"]
    table = []
    for i, row in enumerate(rows):
        *key, mean, std, n, unfinished = row
        cell = "" if mean is None else f"{mean:.1f}" + ("" if std is None else f" ± {std:.1f}")
        table.append([*key, _mark(cell, fmt) if i == best else cell, n, unfinished])
    if fmt == "text":
        return f"search {search_id}\n" + format_rows(columns, table)
    text = [[_cell(v) for v in row] for row in table]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in text])
    lines = [r"\begin{tabular}{" + "l" * len(names) + "r" * 3 + "}", r"\hline", _latex_row(columns), r"\hline"]
    return "\n".join(lines + [_latex_row(row) for row in text] + [r"\hline", r"\end{tabular}"])


def direction(metric: str, own_metric: str, own_mode: str) -> str:
    """Whether higher (``max``) or lower is better for ``metric``: the search's own direction for its metric,
    lowest for a loss, else highest."""
    return own_mode if metric == own_metric else ("min" if metric.startswith("loss") else "max")


def best_index(means: Sequence[float | None], mode: str) -> int | None:
    """The place of the best mean (ties: the first); None when no configuration has one."""
    scored = [(m, i) for i, m in enumerate(means) if m is not None and not math.isnan(m)]
    return (max if mode == "max" else min)(scored, key=lambda s: s[0])[1] if scored else None


def _mark(cell: str, fmt: str) -> str:
    return {"text": f"{cell} *", "markdown": f"**{cell}**", "latex": f"\\textbf{{{cell}}}"}[fmt]


def _latex_row(cells: Sequence[str]) -> str:
    escaped = []
    for cell in cells:
        for char in "&%$#_":
            cell = cell.replace(char, "\\" + char)
        escaped.append(cell.replace("±", r"$\pm$"))
    return " & ".join(escaped) + r" \\"
