"""What a dataset reader produces: the classes and the train/test video lists, before any decoding."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VideoRecord:
    """One video: ``name`` is its path relative to the dataset root (stable across machines)."""

    path: str
    label: int
    name: str


@dataclass
class DatasetIndex:
    classes: list[str]
    train: list[VideoRecord]
    test: list[VideoRecord]
    missing: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)
