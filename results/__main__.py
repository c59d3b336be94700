"""``python -m results``: read the Parquet store.

    python -m results query "SELECT method, avg(final_top1) FROM trials GROUP BY method"   # SELECTs over the tables
    python -m results query --unsafe "COPY (FROM trials) TO 'trials.csv'"   # any DuckDB SQL: files, COPY, ATTACH, ...
    python -m results show SEARCH_ID
    python -m results history SEARCH               # every search run of it: revision, when, who, overrides, seeds
    python -m results table tau --metric top1      # mean ± std over seeds per configuration
    python -m results plot tau --out figures/tau   # PNG figures: ablation, learning curves, pseudo-labels, stages, Optuna
    python -m results report tau --out tau.html --baseline threshold=0.8   # one self-contained HTML page
    python -m results compact [SEARCH_ID ...]      # merge each search's small files (a search does it when it ends)
    python -m results verify [SEARCH_ID ...]       # list the parts that cannot be read; exit 1 if there are any
    python -m results verify --quarantine          # and move them to <store>/quarantine/<table>/search_id=<id>/

Every command reads a store that exists (``--store``). What it cannot take (a missing store, an unknown search, a
search without trials, an empty ``--out``, SQL that would do more than read) is one line on stderr, ``error: …``,
and exit code 2. A part that cannot be read is left out with one ``WARNING: …`` line naming it, its size and its
search; everything else reads as before.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from results.page import write
from results.plot import load, plot
from results.report import FORMATS, history, known_search, query, seed_table, show
from results.store import DEFAULT_STORE, QUARANTINE, TABLES, Store, one_line
from results.tables import compact


class BadOption(ValueError):
    """An option value the command cannot use."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m results", description="Query the searches, trials, epochs and stages tables.")
    commands = parser.add_subparsers(dest="command", required=True)
    q = commands.add_parser("query", help="run SQL (DuckDB) over the tables searches, trials, epochs, stages")
    q.add_argument("sql")
    q.add_argument("--unsafe", action="store_true",
                   help="run any DuckDB SQL (other files, COPY, ATTACH, extensions, settings); default: SELECT over the tables only")  # fmt: skip
    s = commands.add_parser("show", help="a search's trials, best first")
    s.add_argument("search_id")
    s.add_argument("--metric", help="sort by this metric instead of the search's own")
    h = commands.add_parser("history", help="every search run of a search: its revision, when, by whom, with what")
    h.add_argument("search", help="a search id or name (the latest search of that name)")
    t = commands.add_parser("table", help="mean ± std over seeds of each configuration (a paper-style table)")
    t.add_argument("search", help="a search id or name (the latest search of that name)")
    t.add_argument("--metric", default="top1")
    t.add_argument("--format", default="text", choices=FORMATS, help="markdown/latex for a paper or README, csv for a spreadsheet")
    p = commands.add_parser("plot", help="PNG figures of a search (ablation, learning curves, pseudo-labels, stages, Optuna)")
    p.add_argument("search", help="a search id or name (the latest search of that name)")
    p.add_argument("--out", help="folder of the figures (default figures/<search id>)")
    p.add_argument("--metric", help="default: the search's own metric")
    r = commands.add_parser("report", help="one self-contained HTML page: provenance, tables, baseline differences, figures")
    r.add_argument("search", help="a search id or name (the latest search of that name)")
    r.add_argument("--out", help="the HTML file (default <search id>.html)")
    r.add_argument("--metric", help="default: the search's own metric")
    r.add_argument("--baseline", help="the configuration others are compared with, seed by seed, e.g. method=supervised")
    c = commands.add_parser("compact", help="merge each search's parts into one file per table (latest rows only)")
    c.add_argument("search_ids", nargs="*", help="default: every search in the store")
    v = commands.add_parser("verify", help="read every part in full and list those that cannot be read (exit 1 if any)")
    v.add_argument("search_ids", nargs="*", help="default: every part of the store")
    v.add_argument("--quarantine", action="store_true",
                   help=f"move them to <store>/{QUARANTINE}/<table>/search_id=<id>/ (never deleted), out of every reader's way")  # fmt: skip
    for sub in (q, s, h, t, p, r, c, v):
        sub.add_argument("--store", default=DEFAULT_STORE, help=f"folder or URI of the tables (default {DEFAULT_STORE})")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s")  # the unreadable parts' warnings, a line each
    try:
        return run(Store.existing(args.store), args)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
    except Exception as exc:  # DuckDB's errors name the problem in the SQL; the store's name the file
        print(f"error: {one_line(exc)}", file=sys.stderr)
    return 2


def run(store: Store, args: argparse.Namespace) -> int:
    """The command, on a store that exists; its exit code."""
    if args.command == "query":
        print(query(store, args.sql, args.unsafe))
    elif args.command == "compact":
        failed = False
        for search_id in args.search_ids or store.searches():
            try:
                kept = compact(store, search_id)
            except Exception as exc:  # its parts are kept (``Store.replace_parts``): say so, go on with the others
                print(f"error: {search_id}: not compacted: {one_line(exc)}", file=sys.stderr)
                failed = True
                continue
            print(f"{search_id}: " + ", ".join(f"{n} {table}" for table, n in kept.items()))
        return 2 if failed else 0
    elif args.command == "verify":
        return verify(store, args.search_ids, args.quarantine)
    elif args.command == "history":
        print(history(store, args.search))
    elif args.command == "table":
        print(seed_table(store, args.search, args.metric, args.format))
    elif args.command == "plot":
        out = nonempty(args.out, "the figures' folder")
        data = load(store, args.search)
        for figure in plot(data, out or f"figures/{data.search_id}", args.metric):
            print(f"{figure.path}: {figure.caption}")
    elif args.command == "report":
        out = nonempty(args.out, "the HTML file")
        if out and Path(out).is_dir():
            raise BadOption(f"--out {out}: a folder; give the HTML file, e.g. {Path(out) / 'page.html'}")
        data = load(store, args.search)
        print(write(data, out or f"{data.search_id}.html", args.metric, args.baseline))
    else:
        print(show(store, args.search_id, args.metric))
    return 0


def nonempty(out: str | None, what: str) -> str | None:
    """``--out`` as given; an empty one (which would write into the working directory) is refused."""
    if out is not None and not out.strip():
        raise BadOption(f"--out is empty; give {what}, or leave --out out for the default")
    return out


def verify(store: Store, search_ids: list[str], quarantine: bool) -> int:
    """Read every part (of these searches, or of the store) in full; print each that cannot be read, and with
    ``quarantine`` where it was moved. 1 if any could not be read (moved or not), else 0."""
    scopes = [known_search(store, s) for s in search_ids] or [None]
    checked = sum(len(store.parts(table, s)) for table in TABLES for s in scopes)
    bad = [part for s in scopes for table in TABLES for part in store.unreadable(table, s)]
    for part in bad:
        print(part)
        if quarantine:
            print(f"  moved to {store.quarantine(part)}")
    if not bad:
        print(f"{checked} parts, all readable")
        return 0
    where = f"; moved to {store.uri}/{QUARANTINE}/" if quarantine else "; --quarantine moves them aside"
    print(f"{len(bad)} of {checked} parts cannot be read{where}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
