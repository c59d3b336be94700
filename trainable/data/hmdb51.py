"""Reader for the HMDB51 layout: one ``<class>_test_split{1,2,3}.txt`` per class and split, class folders.

Each split file line is ``"video.avi mark"`` with mark 1 = train, 2 = test, 0 = not used in that split;
lines carry trailing spaces and video names odd characters (``#``, ``&``, ``'``, ``!``, brackets), so a
line is split at its last blank only. Class names contain underscores (``brush_hair``), so the class is
what precedes ``_test_split``. The split files sit in the root or in a subfolder (the official archive
unpacks to ``testTrainMulti_7030_splits/``); the class folders in the root or in ``videos/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from trainable.data.index import DatasetIndex
from trainable.data.ucf101 import DatasetLayoutError, Locator, check_split, dataset_root, read_lines

TRAIN, TEST, UNUSED = "1", "2", "0"


def _split_files(root: Path, split: int) -> dict[str, Path]:
    """Class name → its split file, from the root or else the first subfolder that holds them."""
    suffix = f"_test_split{split}.txt"
    for folder in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        files = {p.name[: -len(suffix)]: p for p in folder.glob(f"*{suffix}")}
        if files:
            return files
    raise DatasetLayoutError(f"{root}: no *{suffix} files in it or its subfolders")


def read_hmdb51(root: str | os.PathLike[str], split: int = 1) -> DatasetIndex:
    """Index split ``split`` (1–3) of an HMDB51 folder; classes sorted by name give labels 0..50.

    A record's ``name`` is ``<class>/<video>`` whichever folder holds it, so labeled subsets hash the same
    on every copy; files listed but absent go to ``missing``.
    """
    root = dataset_root(root)
    check_split(split)
    files = _split_files(root, split)
    classes = sorted(files)
    marked: dict[str, list[tuple[str, int, Sequence[str]]]] = {TRAIN: [], TEST: [], UNUSED: []}
    for label, name in enumerate(classes):
        for line in read_lines(files[name]):
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or parts[1] not in marked:
                raise DatasetLayoutError(f"{files[name]}: line {line!r} is not 'video.avi 0|1|2'")
            video, mark = parts
            marked[mark].append((f"{name}/{video}", label, (f"{name}/{video}", f"videos/{name}/{video}")))

    locator = Locator(root)
    train, test = (locator.records(marked[mark]) for mark in (TRAIN, TEST))
    return DatasetIndex(classes=classes, train=train, test=test, missing=locator.missing)
