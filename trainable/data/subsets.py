"""The labeled subset of a training list: k videos per class chosen with a seed (docs/method.md §1.3), the rest
unlabeled. ("Split" is the dataset's official train/test split 1-3, config key ``split``; this is not one.)

The unlabeled part keeps its true labels, but only to measure pseudo-label accuracy. A subset's identity
(``subset_hash``) is a hash of the chosen file names, reported with every run so that two runs can be checked to
have trained on the same labeled videos.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from trainable.data.index import VideoRecord


@dataclass(frozen=True)
class LabeledSubset:
    """The chosen labeled videos, the unlabeled rest, and the hash of the chosen names."""

    labeled: list[VideoRecord]
    unlabeled: list[VideoRecord]
    subset_hash: str


def labeled_subset(records: list[VideoRecord], per_class: int, seed: int, fraction: float | None = None) -> LabeledSubset:
    """Choose ``per_class`` labeled videos in every class, or, when given, ``fraction`` of each (at least one).

    A class with fewer videos than asked is all labeled. The paper's settings are counts per class
    (UCF-101 1 %: 1, 10 %: 10; Kinetics-400 1 %: 6, 10 %: 60); the fraction is for other datasets.
    """
    if fraction is None and per_class < 1:
        raise ValueError(f"labeled_per_class must be >= 1, got {per_class}")
    ordered = sorted(records, key=lambda r: r.name)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, record in enumerate(ordered):
        by_class[record.label].append(i)
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for label in sorted(by_class):
        members = by_class[label]
        want = max(1, round(fraction * len(members))) if fraction is not None else per_class
        take = min(want, len(members))
        chosen.update(int(i) for i in rng.choice(members, size=take, replace=False))
    labeled = [r for i, r in enumerate(ordered) if i in chosen]
    unlabeled = [r for i, r in enumerate(ordered) if i not in chosen]
    digest = hashlib.sha256("\n".join(r.name for r in labeled).encode()).hexdigest()[:12]
    return LabeledSubset(labeled=labeled, unlabeled=unlabeled, subset_hash=digest)
