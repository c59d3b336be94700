"""Writing a trial's epochs into the ledger, from the process that trains it.

Each epoch's row is appended by the trial's Train controller right after the epoch's checkpoint is stored
and before Tune hears of the epoch (``search.trial.LedgerReport``): so no scheduler decision, and no crash
of the search's driver, can come between a checkpoint and its row. A run that resumes from a checkpoint
appends that checkpoint's row again (``trainable.session.RaySession.restore``), which closes the one gap
left, a crash between storing the checkpoint and appending its row; the copy is the same row, and the
tables keep one row per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from results.store import Store
from trainable.metrics import REPORTED


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class EpochWriter:
    """Appends the epochs of one trial of one search."""

    store: Store
    search_id: str
    trial_id: str
    seed: int | None

    def write(self, metrics: dict[str, Any], checkpoint_path: str | None) -> None:
        """``checkpoint_path`` is Train's, a path of the store's filesystem: recorded as the user names it (on S3,
        ``s3://bucket/…``, not ``bucket/…``)."""
        if checkpoint_path and "://" not in checkpoint_path and checkpoint_path.startswith(self.store.root + "/"):
            checkpoint_path = self.store.uri_of(checkpoint_path)
        self._epoch(self.trial_id, metrics, checkpoint_path=checkpoint_path, node_ip=metrics.get("node_ip"))

    def write_stage_epoch(self, stage: str, key: str, metrics: dict[str, Any]) -> None:
        """An epoch of a shared stage result this trial builds (``trainable.stages``): no trial id, since the result
        belongs to every trial that uses it and no trial's summary counts it, and its key in ``stage_key``, where
        the trials that reuse the result find its curves."""
        self._epoch(None, {**metrics, "stage": stage}, stage_key=key)

    def write_stage(self, row: dict[str, Any]) -> None:
        """Which stage result this trial used (``stages`` table): its key, and whether it built or reused it."""
        self.store.append("stages", self.search_id, [{"trial_id": self.trial_id, "seed": self.seed, **row, "recorded_at": now()}])

    def _epoch(self, trial_id: str | None, metrics: dict[str, Any], stage_key: str | None = None, **extra: Any) -> None:
        row: dict[str, Any] = {"trial_id": trial_id, "seed": self.seed}
        row.update({k: _plain(metrics.get(k)) for k in REPORTED})
        row.update(stage=metrics.get("stage"), stage_key=stage_key, **extra, reported_at=now())
        self.store.append("epochs", self.search_id, [row])


def _plain(value: Any) -> Any:
    """Numpy or torch scalars as Python numbers, so every part has plain Parquet types."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return value.item() if hasattr(value, "item") else value
