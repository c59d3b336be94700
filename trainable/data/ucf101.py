"""Reader for the UCF-101 layout: ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``, class folders.

Quirks of the official files it handles: CRLF line endings, 1-based class indices, test lists without
labels (the class is the folder), and class folders whose case differs from the lists
(``HandStandPushups`` on disk, ``HandstandPushups`` in the lists). The lists may sit in the root or in
``ucfTrainTestlist/``; the class folders in the root or in ``UCF-101/``.

The layout helpers here (``DatasetLayoutError``, ``Locator`` and friends) are shared by the HMDB51 and
Kinetics-400 readers, whose files disagree with their lists in the same ways.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from trainable.data.index import DatasetIndex, VideoRecord

SPLITS = (1, 2, 3)


class DatasetLayoutError(ValueError):
    """The folder does not hold the files the layout needs."""


def dataset_root(root: str | os.PathLike[str]) -> Path:
    """``root`` as a path, checked up front: a typo in a path should not read as "every video missing"."""
    path = Path(root)
    if not path.is_dir():
        raise DatasetLayoutError(f"dataset folder {path} does not exist")
    return path


def check_split(split: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split}")


def read_lines(path: Path) -> list[str]:
    """Non-empty lines without surrounding blanks: the official lists carry CRLF and trailing spaces."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_file(root: Path, name: str, subdirs: tuple[str, ...]) -> Path:
    """``name`` in ``root`` or the first of ``subdirs`` holding it: copies of a dataset unpack differently."""
    for sub in ("", *subdirs):
        candidate = root / sub / name
        if candidate.is_file():
            return candidate
    raise DatasetLayoutError(f"{root}: no {name} (looked in {', '.join(['.', *subdirs])})")


class Locator:
    """Finds listed videos under a dataset root and keeps the names of those it cannot find.

    Lists and disks disagree in case (UCF-101) and in folder layout (Kinetics copies with or without class
    folders), so each video comes with candidate paths, tried in order, each matched case-insensitively
    when the exact path is absent. A missing video is recorded rather than raised: large datasets always
    lack a few, and ``python -m trainable.data check`` reports them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.missing: list[str] = []
        self._listings: dict[Path, dict[str, str]] = {}

    def records(self, entries: Iterable[tuple[str, int, Sequence[str]]]) -> list[VideoRecord]:
        """Records of the ``(name, label, candidate paths)`` entries found on disk, in order."""
        found = []
        for name, label, candidates in entries:
            path = next((p for rel in candidates if (p := self._find(rel)) is not None), None)
            if path is None:
                self.missing.append(name)
            else:
                found.append(VideoRecord(path=str(path), label=label, name=name))
        return found

    def _find(self, rel: str) -> Path | None:
        exact = self.root / rel
        if exact.is_file():
            return exact
        path = self.root
        for part in rel.split("/"):
            actual = self._listing(path).get(part.lower())
            if actual is None:
                return None
            path = path / actual
        return path if path.is_file() else None

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._listings:
            try:
                names = os.listdir(folder)
            except OSError:  # not a folder, or absent
                names = []
            self._listings[folder] = {name.lower(): name for name in names}
        return self._listings[folder]


def read_ucf101(root: str | os.PathLike[str], split: int = 1) -> DatasetIndex:
    """Index split ``split`` (1–3) of a UCF-101-layout folder; files listed but absent go to ``missing``.

    A record's ``name`` is its path as the lists spell it, so labeled subsets hash the same on every copy.
    """
    root = dataset_root(root)
    check_split(split)
    lists = ("ucfTrainTestlist",)
    classes_by_index = {}
    for line in read_lines(find_file(root, "classInd.txt", lists)):
        index, name = line.split(maxsplit=1)
        classes_by_index[int(index)] = name
    classes = [classes_by_index[i] for i in sorted(classes_by_index)]
    label_of = {name.lower(): i for i, name in enumerate(classes)}

    def entries(list_name: str) -> Iterable[tuple[str, int, Sequence[str]]]:
        for line in read_lines(find_file(root, list_name, lists)):
            rel, *label = line.split()
            rel = rel.replace("\\", "/")
            folder = rel.partition("/")[0].lower()
            if not label and folder not in label_of:
                raise DatasetLayoutError(f"{list_name}: class folder of {rel} is not in classInd.txt")
            yield rel, int(label[0]) - 1 if label else label_of[folder], (f"UCF-101/{rel}", rel)

    locator = Locator(root)
    train = locator.records(entries(f"trainlist0{split}.txt"))
    test = locator.records(entries(f"testlist0{split}.txt"))
    return DatasetIndex(classes=classes, train=train, test=test, missing=locator.missing)
