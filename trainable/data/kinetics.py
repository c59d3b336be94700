"""Reader for Kinetics-400: ``train.csv`` / ``validate.csv`` annotations and the downloaded clips.

The CSVs (in the root or ``annotations/``) have the header ``label,youtube_id,time_start,time_end,split``
and sometimes ``is_cc``; labels are quoted when they hold commas or spaces, and YouTube ids may begin with
``-``, so they are read with :mod:`csv`, never split by hand. A clip is ``<id>_<start:06d>_<end:06d>.mp4``
in ``train/<label>/`` or flat in ``train/`` (downloaders differ), likewise ``val/`` or ``validate/`` for the
validation CSV. Many clips have vanished from YouTube, so missing files are the normal case, not an error.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterator, Sequence

from trainable.data.index import DatasetIndex
from trainable.data.ucf101 import DatasetLayoutError, Locator, dataset_root, find_file

COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def _rows(root: Path, csv_name: str) -> list[dict[str, str]]:
    path = find_file(root, csv_name, ("annotations",))
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        absent = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if absent:
            raise DatasetLayoutError(f"{path}: no column {', '.join(absent)} in the header")
        return list(reader)


def _entries(
    rows: list[dict[str, str]], label_of: dict[str, int], folders: tuple[str, ...]
) -> Iterator[tuple[str, int, Sequence[str]]]:
    for row in rows:
        label = row["label"]
        if label not in label_of:
            raise DatasetLayoutError(f"label {label!r} of {row['youtube_id']} is not a training label")
        file = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"
        # Class folders are named by the label, or by the label with underscores (some downloaders).
        names = dict.fromkeys([label, label.replace(" ", "_")])
        candidates = [f"{folder}/{name}/{file}" for folder in folders for name in names]
        candidates += [f"{folder}/{file}" for folder in folders]
        yield f"{label}/{file}", label_of[label], candidates


def read_kinetics400(root: str | os.PathLike[str]) -> DatasetIndex:
    """Index a Kinetics-400 folder: train list from ``train.csv``, test list from ``validate.csv``.

    The class index is the position in the sorted distinct training labels (the convention of published
    checkpoints). A record's ``name`` is ``<label>/<file>`` in either folder style, so labeled subsets hash
    the same on every copy; clips listed but absent go to ``missing``.
    """
    root = dataset_root(root)
    train_rows, test_rows = _rows(root, "train.csv"), _rows(root, "validate.csv")
    classes = sorted({row["label"] for row in train_rows})
    label_of = {label: i for i, label in enumerate(classes)}
    locator = Locator(root)
    train = locator.records(_entries(train_rows, label_of, ("train",)))
    test = locator.records(_entries(test_rows, label_of, ("val", "validate")))
    return DatasetIndex(classes=classes, train=train, test=test, missing=locator.missing)
