"""Logging for this project's own messages only, so enabling them does not turn on Ray's INFO chatter."""

from __future__ import annotations

import logging
import sys

PACKAGES = ("trainable", "search", "results")


def setup(level: int = logging.INFO) -> None:
    """Print this project's log records to stdout (Ray forwards a worker's stdout to the driver and job logs)."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
