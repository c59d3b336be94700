"""``python -m search``: validate a search space, or run it on Ray.

    python -m search check spaces/demo.yaml
    python -m search run spaces/demo.yaml [--address auto] [--store DIR_OR_URI] [--name NAME [--revise]] [--set key=value ...]
    python -m search simulate spaces/demo.yaml --curves bench/curves [--repeats 20] [--concurrency 2] [--json FILE]
    python -m search doctor --store s3://bucket/results [--address auto] [--space spaces/demo.yaml]
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from results.store import DEFAULT_STORE, StoreError
from search.preflight import open_store, preflight
from search.space import Space, SpaceError, describe, load, parse_overrides
from trainable import logs


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``error: …``, exit 2) like every other refusal, not usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m search", description="Hyperparameter and ablation searches on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, text in (
        ("check", "validate a space and print what would run, without starting Ray"),
        ("run", "run a space"),
        ("simulate", "replay a space's scheduler and searcher over recorded learning curves, in simulated time"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("space", help="a YAML search space, e.g. spaces/demo.yaml")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base-config value")
        sub.add_argument("--seeds", type=_seed_list, help="replace the file's seeds, e.g. 0 or 0,1,2")
        sub.add_argument("--workers", type=int, help="Train workers per trial (replaces resources.workers)")
        sub.add_argument("--cpus-per-worker", type=float, help="replaces resources.cpus_per_worker")
        sub.add_argument("--gpus-per-worker", type=float, help="replaces resources.gpus_per_worker")
        if name in ("check", "run"):  # check refuses what run would, so it takes run's options
            sub.add_argument("--address", help="Ray cluster to join ('auto', 'ray://host:10001'); default: a local instance, or the job's cluster")
            sub.add_argument("--store", default=DEFAULT_STORE, help=f"folder or URI (s3://…) of the Parquet tables (default {DEFAULT_STORE})")
            sub.add_argument("--name", help="search id; naming an interrupted search resumes it")
            sub.add_argument("--revise", action="store_true", help="resume even though the space, overrides, seeds or "
                             "resources differ from the search's, recording the change as its next revision")  # fmt: skip
        if name == "simulate":
            sub.add_argument("--curves", required=True, metavar="STORE[:SEARCH]", help="a store holding a full grid run to its last epoch, e.g. bench/curves")
            sub.add_argument("--repeats", type=_positive, default=20, help="simulated searches, the searcher seeded 0..R-1 (default 20)")
            sub.add_argument("--concurrency", type=_positive, default=2, help="trials computing at once (default 2)")
            sub.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
            sub.add_argument("--figure", metavar="PNG", help="the regret-versus-budget figure (default figures/simulate-<space>.png)")
    doctor = commands.add_parser("doctor", help="check, before a long search, that every node can use the store and a trial fits",
                                 description="check, before a long search, that every node can use the store and a trial fits")  # fmt: skip
    doctor.add_argument("--store", default=DEFAULT_STORE, help=f"folder or URI (s3://…) of the Parquet tables (default {DEFAULT_STORE})")
    doctor.add_argument("--address", help="Ray cluster to check ('auto', 'ray://host:10001'); default: a local instance")
    doctor.add_argument("--space", help="a search space whose trial resources to fit (default: 1 worker x 1 CPU)")
    args = parser.parse_args(argv)
    logs.setup()
    if args.command == "doctor":
        return _doctor(args)
    try:
        resources = {
            key: getattr(args, key)
            for key in ("workers", "cpus_per_worker", "gpus_per_worker")
            if getattr(args, key) is not None
        }
        space = load(args.space, parse_overrides(args.set), seeds=args.seeds, resources=resources)
    except SpaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "simulate":
        return _simulate(space, args)
    try:
        store = open_store(args.store)
        search_id, _ = preflight(space, store, args.name, args.address, args.revise)
    except (SpaceError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        for line in getattr(exc, "diff", []):  # a changed resume: how the space file differs
            print(f"  {line}", file=sys.stderr)
        return 2
    print(describe(space), flush=True)
    if args.command == "check":
        return 0
    from search.runner import run

    try:
        run(space, store, address=args.address, name=search_id, revise=args.revise)
    except (SpaceError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from search.doctor import main as doctor

    try:
        space = load(args.space) if args.space else None
        store = open_store(args.store)
    except (SpaceError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return doctor(store.uri, args.address, space)


def _seed_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are integers separated by commas, got {text!r}") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _simulate(space: Space, args: argparse.Namespace) -> int:
    from search.simulate import Curves, CurvesError, figure, repeat, report, write_json

    try:
        curves = Curves.load(args.curves, space.spec.metric)
        curves.check(space)
    except (CurvesError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = repeat(space.name, space, curves, args.repeats, args.concurrency)
    print(report([summary], curves, space))
    drawn = figure([summary], args.figure or f"figures/simulate-{space.name}.png")
    print(f"figure: {drawn}")
    if args.json:
        write_json([summary], curves, args.json)
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
