"""``python -m trainable.data check ROOT --dataset ucf101 --split 1``: what a dataset folder really holds.

Training skips missing and unreadable videos with a log line, so a broken copy would only show up as a
quietly smaller dataset; this command decodes every listed video up front and reports them. It is a
report, so it exits 0 whatever it finds, and 2 only when the folder is not in the dataset's layout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from trainable.data import READERS, read_index
from trainable.data.index import VideoRecord
from trainable.data.ucf101 import SPLITS, DatasetLayoutError
from trainable.data.video import VideoDecodeError, decode

SHOWN = 10  # names listed per problem; the counts cover the rest


def _unreadable(records: list[VideoRecord]) -> list[str]:
    """``"name: reason"`` for every record that does not decode."""
    failures = []
    for record in tqdm(records, desc="decoding", unit="video"):
        try:
            decode(record.path)
        except VideoDecodeError as exc:
            failures.append(f"{record.name}: {str(exc).removeprefix(f'{record.path}: ')}")
    return failures


def _problems(title: str, items: list[str]) -> None:
    print(f"{title}: {len(items)}")
    for item in items[:SHOWN]:
        print(f"  {item}")
    if len(items) > SHOWN:
        print(f"  ... and {len(items) - SHOWN} more")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m trainable.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="index a dataset folder and decode every listed video")
    check.add_argument("root", type=Path, help="the dataset folder")
    check.add_argument("--dataset", choices=READERS, default="ucf101")
    check.add_argument("--split", type=int, choices=SPLITS, default=1, help="ignored for kinetics400")
    args = parser.parse_args(argv)

    try:
        index = read_index(args.dataset, args.root, args.split)
    except DatasetLayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unreadable = _unreadable(index.train + index.test)
    print(f"{args.dataset} split {args.split} in {args.root}")
    print(f"classes: {index.num_classes}")
    print(f"train: {len(index.train)} videos")
    print(f"test: {len(index.test)} videos")
    _problems("missing (listed, not on disk)", index.missing)
    _problems("unreadable (on disk, does not decode)", unreadable)
    return 0


if __name__ == "__main__":
    sys.exit(main())
