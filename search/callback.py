"""A Ray Tune callback on the driver that appends a search's ``searches`` rows and its trials' events.

Epoch rows are not written here: the trial's own process appends them (``results.ledger``), before Tune
hears of them. This callback appends a ``trials`` row when a trial starts and when it ends (status, error,
wall time over every attempt, the search's revision it ran under), a ``searches`` row when the search starts
and ends, and the ``runs`` row of this run (its provenance, never replaced) when it starts. Nothing it holds is
needed to resume: a resumed search reads what earlier runs wrote from the ledger (``search.resume``).
Every few thousand reports, and at the end, it compacts the search's parts.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from results.ledger import now
from results.store import Store
from results.tables import compact
from search.resume import Pins
from trainable.config import TrainConfig

log = logging.getLogger(__name__)

COMPACT_EVERY = 2000  # reports between compactions of a running search: bounds the files a reader lists


class ResultsCallback(Callback):
    """Appends the rows of the search ``search_row["search_id"]`` and of its trials."""

    def __init__(
        self, store: Store, search_row: dict[str, Any], earlier: list[dict[str, Any]], pins: Pins, run_row: dict[str, Any] | None = None
    ) -> None:
        self.store = store
        self.search = dict(search_row)
        self.run_row = run_row
        self.search_id = search_row["search_id"]
        self.pins = pins
        self.known = {t["trial_id"]: t for t in earlier}  # what earlier runs of this search recorded
        self.ids: dict[str, str] = {}  # Tune's trial id -> the ledger's
        self.rows: dict[str, dict[str, Any]] = {}  # ledger id -> the trial's row
        self.epochs: dict[str, int] = {}  # ledger id -> last reported epoch
        self._started: dict[str, float] = {}
        self._reports = 0
        self._compacting: threading.Thread | None = None

    def setup(self, **info: Any) -> None:
        self._append("searches", self.search)
        if self.run_row is not None:
            self._append("runs", self.run_row)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial_id = self._row(trial)
        self.rows[trial_id]["status"] = "running"
        # Wall time counts every attempt of a trial: start the clock at what earlier attempts used. A trial that
        # starts again after a pause (a scheduler waiting at a rung) or a retry keeps the clock it had.
        self._started.setdefault(trial_id, time.monotonic() - self.rows[trial_id]["wall_s"])
        self._append("trials", self.rows[trial_id])

    def _row(self, trial: Any) -> str:
        """The trial's ledger id, its row made on first sight (a trial can fail before it ever starts)."""
        if trial.trial_id not in self.ids:
            self.ids[trial.trial_id] = self.pins.trial_id(trial.config, trial.trial_id)
        trial_id = self.ids[trial.trial_id]
        row = self.rows.get(trial_id)
        if row is None:
            before = self.known.get(trial_id, {})
            row = {
                "trial_id": trial_id,
                **TrainConfig.parse(trial.config).model_dump(),
                "stopped_at_epoch": None,
                "error": None,
                "wall_s": before.get("wall_s") or 0.0,
                "started_at": before.get("started_at") or now(),
                "ended_at": None,
                "status": "pending",
                "revision": self.search.get("revision", 1),  # the revision of the search this attempt ran under
            }
            self.rows[trial_id] = row
            self.epochs[trial_id] = int(before.get("epochs_run") or 0)
        return trial_id

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if "epoch" in result:
            self.epochs[self._row(trial)] = int(result["epoch"])
            self._reports += 1
            if self._reports % COMPACT_EVERY == 0 and not (self._compacting and self._compacting.is_alive()):
                # In the background: Tune's loop goes on; parts written meanwhile are left for the next time.
                self._compacting = threading.Thread(target=self.compact, name="compact", daemon=True)
                self._compacting.start()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial_id = self._row(trial)
        row, epochs_run = self.rows[trial_id], self.epochs[trial_id]
        finished = epochs_run >= row["epochs"]
        self._end(trial_id, "completed" if finished else "stopped", stopped_at_epoch=None if finished else epochs_run)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(self._row(trial), "errored", error=_error_text(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.finish("completed")

    def finish(self, status: str) -> None:
        """Mark the search ended (``completed``, ``interrupted`` or ``failed``) and compact it."""
        if self.search.get("ended_at"):
            return
        for trial_id in list(self._started):  # trials cut short by the end of the search
            self._end(trial_id, "interrupted")
        self.search.update(status=status, ended_at=now())
        self._append("searches", self.search)
        if self._compacting:
            self._compacting.join()
        self.compact()

    def compact(self) -> None:
        try:
            compact(self.store, self.search_id)
        except Exception as exc:  # a failed compaction leaves the parts, which stay correct: warn, go on
            log.warning("could not compact search %s: %s", self.search_id, exc)

    def _end(self, trial_id: str, status: str, **fields: Any) -> None:
        row = self.rows[trial_id]
        started = self._started.pop(trial_id, None)
        if started is not None:
            row["wall_s"] = time.monotonic() - started
        row.update(status=status, ended_at=now(), **fields)
        self._append("trials", row)

    def _append(self, table: str, row: dict[str, Any]) -> None:
        try:
            self.store.append(table, self.search_id, [row])
        except OSError as exc:  # the trial goes on; its epochs are written by its own process
            log.warning("could not write a %s row of %s: %s", table, self.search_id, exc)


def _error_text(trial: Any) -> str:
    path = trial.error_file
    if path and Path(path).exists():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        return lines[-1][:500] if lines else "error"
    return "error"
