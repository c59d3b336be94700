"""Logging for this project's own messages only, so enabling them does not turn on Ray's INFO chatter."""

from __future__ import annotations

import logging
import sys

PACKAGES = ("trainable", "search", "results")


def setup(level: int = logging.INFO, tag: str | None = None) -> None:
    """Print this project's log records to stdout (Ray forwards a worker's stdout to the driver and job logs),
    each line after ``tag: `` when a tag is given."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter(f"{tag}: %(message)s" if tag else "%(message)s"))
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
