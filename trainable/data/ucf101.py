"""Reader for the UCF-101 layout: ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``, class folders.

Quirks of the official files it handles: CRLF line endings, 1-based class indices, test lists without
labels (the class is the folder), and class folders whose case differs from the lists
(``HandStandPushups`` on disk, ``HandstandPushups`` in the lists). The lists may sit in the root or in
``ucfTrainTestlist/``; the class folders in the root or in ``UCF-101/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainable.data.index import DatasetIndex, VideoRecord


class DatasetLayoutError(ValueError):
    """The folder does not hold the files the layout needs."""


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def _find(root: Path, name: str, subdirs: tuple[str, ...]) -> Path:
    for sub in ("", *subdirs):
        candidate = root / sub / name
        if candidate.exists():
            return candidate
    raise DatasetLayoutError(f"{root}: no {name} (looked in {', '.join(['.', *subdirs])})")


def read_ucf101(root: str | os.PathLike[str], split: int = 1) -> DatasetIndex:
    """Index split ``split`` (1–3) of a UCF-101-layout folder; files listed but absent go to ``missing``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder {root} does not exist")
    lists = ("ucfTrainTestlist",)
    classes_by_index = {}
    for line in _lines(_find(root, "classInd.txt", lists)):
        index, name = line.split(maxsplit=1)
        classes_by_index[int(index)] = name
    classes = [classes_by_index[i] for i in sorted(classes_by_index)]
    label_of = {name.lower(): i for i, name in enumerate(classes)}

    video_root = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    folders = {p.name.lower(): p.name for p in video_root.iterdir() if p.is_dir()}
    missing: list[str] = []

    def record(rel: str, label: int | None) -> VideoRecord | None:
        rel = rel.replace("\\", "/")
        folder, _, filename = rel.partition("/")
        if label is None:
            label = label_of[folder.lower()]
        on_disk = folders.get(folder.lower(), folder)
        # File names repeat the class name, so a case mismatch in the folder repeats there too.
        candidates = [video_root / on_disk / filename, video_root / on_disk / filename.replace(folder, on_disk)]
        for path in candidates:
            if path.exists():
                return VideoRecord(path=str(path), label=label, name=rel)
        missing.append(rel)
        return None

    train = [
        r
        for line in _lines(_find(root, f"trainlist0{split}.txt", lists))
        if (r := record(line.split()[0], int(line.split()[1]) - 1)) is not None
    ]
    test = [r for line in _lines(_find(root, f"testlist0{split}.txt", lists)) if (r := record(line.split()[0], None))]
    return DatasetIndex(classes=classes, train=train, test=test, missing=missing)
