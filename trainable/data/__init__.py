"""Datasets: readers of the official layouts, the synthetic dataset, sampling, augmentation."""

from __future__ import annotations

import os

from trainable.data.index import DatasetIndex

READERS = ("ucf101", "hmdb51", "kinetics400")


def read_index(dataset: str, root: str | os.PathLike[str], split: int = 1) -> DatasetIndex:
    """The classes and train/test lists of ``dataset`` in its official layout under ``root``."""
    if dataset == "ucf101":
        from trainable.data.ucf101 import read_ucf101

        return read_ucf101(root, split)
    if dataset == "hmdb51":
        from trainable.data.hmdb51 import read_hmdb51

        return read_hmdb51(root, split)
    if dataset == "kinetics400":
        from trainable.data.kinetics import read_kinetics400

        return read_kinetics400(root)
    raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(READERS)}")
