"""``python -m results``: read the Parquet store.

    python -m results query "SELECT method, avg(final_top1) FROM trials GROUP BY method"
    python -m results show SEARCH_ID
    python -m results table tau --metric top1      # mean ± std over seeds per configuration
    python -m results plot tau --out figures/tau   # PNG figures: ablation, learning curves, pseudo-labels, stages, Optuna
    python -m results report tau --out tau.html --baseline threshold=0.8   # one self-contained HTML page
    python -m results compact [SEARCH_ID ...]      # merge each search's small files (a search does it when it ends)
"""

from __future__ import annotations

import argparse
import sys

from results.page import write
from results.plot import load, plot
from results.report import FORMATS, query, seed_table, show
from results.store import DEFAULT_STORE, Store
from results.tables import compact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m results", description="Query the searches, trials, epochs and stages tables.")
    commands = parser.add_subparsers(dest="command", required=True)
    q = commands.add_parser("query", help="run SQL (DuckDB) over the tables searches, trials, epochs, stages")
    q.add_argument("sql")
    s = commands.add_parser("show", help="a search's trials, best first")
    s.add_argument("search_id")
    s.add_argument("--metric", help="sort by this metric instead of the search's own")
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
    for sub in (q, s, t, p, r, c):
        sub.add_argument("--store", default=DEFAULT_STORE, help=f"folder or URI of the tables (default {DEFAULT_STORE})")
    args = parser.parse_args(argv)
    store = Store(args.store)
    try:
        if args.command == "query":
            print(query(store, args.sql))
        elif args.command == "compact":
            for search_id in args.search_ids or store.searches():
                kept = compact(store, search_id)
                print(f"{search_id}: " + ", ".join(f"{n} {table}" for table, n in kept.items()))
        elif args.command == "table":
            print(seed_table(store, args.search, args.metric, args.format))
        elif args.command == "plot":
            data = load(store, args.search)
            for figure in plot(data, args.out or f"figures/{data.search_id}", args.metric):
                print(f"{figure.path}: {figure.caption}")
        elif args.command == "report":
            data = load(store, args.search)
            print(write(data, args.out or f"{data.search_id}.html", args.metric, args.baseline))
        else:
            print(show(store, args.search_id, args.metric))
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except Exception as exc:  # DuckDB's errors name the problem in the SQL
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
