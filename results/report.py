"""Reading the store as tables: SQL through DuckDB, a search's trials, and mean ± std over seeds with its uncertainty."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Sequence

import duckdb

from results.stats import best_index, interval_text, mean_ci, mean_std, verdict_cells, verdicts
from results.store import QUARANTINE, Store
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


class Refused(ValueError):
    """SQL that ``query`` does not run without ``unsafe``: it would do more than read the store's tables."""


def query(store: Store, sql: str, unsafe: bool = False) -> str:
    """Run SQL over the tables; its result as a text table.

    Read-only unless ``unsafe``: only SELECT statements (``WITH``, ``FROM``, ``DESCRIBE``, ``SUMMARIZE`` are
    SELECTs too), and on a connection that can open no file but the store's parts, nor load an extension or change a
    setting (``connect(locked=True)``), so that SQL given to the command (from a dashboard, a colleague's snippet)
    cannot read ``/etc/passwd``, write a file or attach a database. ``unsafe`` is DuckDB with its full power, for a
    local user who wants it.
    """
    if not unsafe:
        for statement in duckdb.extract_statements(sql):
            if statement.type != duckdb.StatementType.SELECT:
                text = " ".join(statement.query.split())
                text = text if len(text) <= 60 else text[:59] + "…"
                raise Refused(f"query: refused {text!r} (statement type {statement.type.name}): without --unsafe only "
                              "SELECT statements over the tables searches, trials, epochs, stages run")  # fmt: skip

    def run() -> str:
        try:
            result = connect(store, locked=not unsafe).execute(sql)
        except duckdb.PermissionException as exc:
            raise Refused(f"query: {str(exc).splitlines()[0]}: without --unsafe a query reads only the store's tables") from exc
        if result.description is None:  # a statement without rows (--unsafe's SET, CREATE, ...)
            return ""
        return format_rows([d[0] for d in result.description], result.fetchall())

    return retrying(run)


def varied_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Config columns whose value differs between the trials of ``con``'s search (the searched parameters and seed)."""
    trials = con.sql("SELECT * FROM trials").to_arrow_table()
    return [name for name in trials.column_names if name in _CONFIG and len(set(map(str, trials.column(name).to_pylist()))) > 1]


def known_search(store: Store, search_id: str) -> str:
    """``search_id``, if the store has that search; a KeyError listing those it has otherwise."""
    if search_id not in store.searches():
        raise KeyError(f"no search {search_id!r} in {store.uri}; searches: {', '.join(store.searches()) or 'none'}")
    return search_id


def open_search(store: Store, search_id: str) -> duckdb.DuckDBPyConnection:
    """A connection that reads only this search's files, for a command that shows its trials: one that has no
    readable ``searches`` row or no trials yet is refused here, by name, rather than by the first query that
    finds a column missing."""
    con = connect(store, known_search(store, search_id))
    if not con.execute("SELECT count(*) FROM _searches_latest").fetchall()[0][0]:
        raise KeyError(f"search {search_id!r} in {store.uri} has no readable searches row (`python -m results verify "
                       f"{search_id}` lists its unreadable parts; those moved aside are in {store.uri}/{QUARANTINE}/)")  # fmt: skip
    if not con.execute("SELECT count(*) FROM _trial_events").fetchall()[0][0]:
        raise KeyError(f"search {search_id!r} in {store.uri} has no trials yet")
    return con


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


def history(store: Store, search: str) -> str:
    """Every ``search run`` of a search, oldest first: its revision, when, by whom, with which overrides and seeds."""
    search_id = resolve(store, search)

    def run() -> str:
        con = open_search(store, search_id)
        columns = ["revision", "started_at", "user", "host", "overrides", "seeds", "space_hash", "git_commit", "command"]
        have = [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
        if "revision" not in have:
            raise KeyError(f"search {search_id!r} in {store.uri} has no runs recorded (it ran before the store kept them)")
        rows = con.execute(f"SELECT {', '.join(columns)} FROM runs ORDER BY run_id").fetchall()
        return f"search {search_id}\n" + format_rows(columns, [[*r[:7], (r[7] or "")[:12], r[8]] for r in rows])

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
    """The paper's kind of table, with how sure its seeds make it: per configuration, mean ± std of the final
    metric over seeds and the mean's 95 % t interval, the best mean marked (by the search's direction for its own
    metric; lowest for a loss, else highest); and, against the best configuration of the verdict
    (``results.stats.verdicts``), the difference paired by seed with its 95 % interval and paired t-test p, the
    verdict (worse, not resolved, ...) and the seeds a paired t-test would need to resolve that difference. A footer
    (not in csv) says it in words, with the verdict's rule for configurations whose trials did not all complete.

    ``fmt``: ``text`` (the terminal; the best mean starred), ``markdown`` and ``latex`` (for a paper or a
    README; the best in bold), ``csv`` (every number in a column of its own, and a ``best`` column).
    """
    if fmt not in FORMATS:
        raise KeyError(f"format {fmt!r}: allowed {', '.join(FORMATS)}")
    search_id = resolve(store, search)

    def run() -> tuple[list[str], list[tuple], str]:
        con = open_search(store, search_id)
        params = [c for c in varied_columns(con) if c != "seed"]
        keys = ", ".join(f'"{c}"' for c in params) or "'all' AS configuration"
        group = ", ".join(f'"{c}"' for c in params) or "1"
        rows = con.execute(f'SELECT {keys}, seed, "final_{metric}", status FROM trials ORDER BY {group}, seed').fetchall()
        own, mode = con.execute("SELECT metric, mode FROM searches").fetchall()[0]
        return params, rows, direction(metric, own, mode)

    params, rows, mode = retrying(run)
    names = params or ["configuration"]
    configs = _configurations(rows)
    judged = verdicts({c.key: c.by_seed for c in configs}, mode, early={c.key for c in configs if c.early})
    best = best_index([c.mean for c in configs], mode)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*names, f"{metric}_mean", f"{metric}_std", "ci_low", "ci_high", "seeds", "not_completed", "best",
                         "diff_vs_best", "diff_low", "diff_high", "p", "verdict", "seeds_needed"])  # fmt: skip
        for i, c in enumerate(configs):
            verdict = judged.of.get(c.key)
            diff = verdict.vs_best if verdict else None
            numbers = [diff.mean, diff.low, diff.high, diff.p] if diff else [math.nan] * 4
            *_, label, needed = verdict_cells(verdict, 1)
            writer.writerow([*c.key, *map(_csv, (c.mean, c.std, c.low, c.high)), len(c.values), c.unfinished, i == best,
                             *map(_csv, numbers), label, needed])  # fmt: skip
        return out.getvalue()
    columns = [*names, f"{metric} mean ± std", "95% CI", "seeds", "not completed", "Δ best (95% CI)", "p", "verdict", "seeds needed"]
    table = []
    for i, c in enumerate(configs):
        cell = "" if math.isnan(c.mean) else f"{c.mean:.1f}" + ("" if math.isnan(c.std) else f" ± {c.std:.1f}")
        table.append([*c.key, _mark(cell, fmt) if i == best else cell, interval_text(c.low, c.high, 1), len(c.values),
                      c.unfinished, *verdict_cells(judged.of.get(c.key), 1)])  # fmt: skip
    label = (lambda key: ", ".join(f"{p}={_cell(v)}" for p, v in zip(params, key))) if params else (lambda key: "all trials")
    footer = judged.footer(label, metric)
    if fmt == "text":
        return "\n".join([f"search {search_id}", format_rows(columns, table), *footer])
    text = [[_cell(v) for v in row] for row in table]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in text] + [f"\n{line}" for line in footer])
    # the footer as comments: it travels with the table into the paper's source without being typeset
    lines = [f"% {line}" for line in footer] + [r"\begin{tabular}{" + "l" * len(names) + "rrrrrrlr}", r"\hline", _latex_row(columns), r"\hline"]
    lines += [_latex_row(row) for row in text] + [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Configuration:
    """One row of ``seed_table``: a configuration's final values over its seeds, and how its trials ended."""

    key: tuple
    by_seed: dict[Any, float]  # a seed run twice: its last trial
    values: list[float]
    early: bool  # some value is from a trial that did not complete
    unfinished: int  # trials that did not complete, with a value or not
    mean: float
    std: float
    low: float  # the mean's 95 % t interval
    high: float


def _configurations(rows: Sequence[tuple]) -> list[_Configuration]:
    """``(*key, seed, value, status)`` rows, in key order, grouped by key; a missing or NaN value is no value."""
    groups: dict[tuple, list[tuple]] = {}
    for *key, seed, value, status in rows:
        groups.setdefault(tuple(key), []).append((seed, value, status))
    out = []
    for key, trials in groups.items():
        scored = [(seed, float(v), status) for seed, v, status in trials if v is not None and not math.isnan(v)]
        values = [v for _, v, _ in scored]
        mean, low, high = mean_ci(values)
        out.append(_Configuration(
            key, {seed: v for seed, v, _ in scored}, values, any(status != "completed" for _, _, status in scored),
            sum(status != "completed" for _, _, status in trials), mean, mean_std(values)[1], low, high,
        ))  # fmt: skip
    return out


def _csv(value: float) -> float | None:
    """NaN (no value, or an interval of one seed) as an empty cell."""
    return None if math.isnan(value) else value


def direction(metric: str, own_metric: str, own_mode: str) -> str:
    """Whether higher (``max``) or lower is better for ``metric``: the search's own direction for its metric,
    lowest for a loss, else highest."""
    return own_mode if metric == own_metric else ("min" if metric.startswith("loss") else "max")


def _mark(cell: str, fmt: str) -> str:
    return {"text": f"{cell} *", "markdown": f"**{cell}**", "latex": f"\\textbf{{{cell}}}"}[fmt]


def _latex_row(cells: Sequence[str]) -> str:
    escaped = []
    for cell in cells:
        for char in "&%$#_":
            cell = cell.replace(char, "\\" + char)
        for symbol, tex in (("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("<", "$<$"), (">", "$>$")):
            cell = cell.replace(symbol, tex)
        escaped.append(cell)
    return " & ".join(escaped) + r" \\"
