"""A Ray Tune callback on the driver that keeps the three Parquet tables of one search up to date.

It sees every result Tune receives, so the tables grow while the search runs: each epoch's row and the
trial's summary are written as soon as the epoch is reported. Its rows are part of Tune's experiment
state, so a restored search keeps the rows written before the interruption.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ray.tune import Callback

from results.store import Store
from trainable.config import TrainConfig
from trainable.loop import METRICS, REPORTED

log = logging.getLogger(__name__)

# The trial summary's best values: higher is better for accuracies, lower for losses.
BEST = {"top1": "max", "top5": "max", "aux_top1": "max", "loss": "min"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultsCallback(Callback):
    """Writes ``searches``, ``trials`` and ``epochs`` rows of the search ``search_row["search_id"]``."""

    def __init__(self, store: Store, search_row: dict[str, Any], metric: str, mode: str) -> None:
        self.store = store
        self.search = dict(search_row)
        self.search_id = search_row["search_id"]
        self.metric, self.mode = metric, mode
        self.best = {**BEST, metric: mode}  # the search's own metric always gets a best_ column
        self.trials: dict[str, dict[str, Any]] = {}
        self.epochs: list[dict[str, Any]] = []
        self._started: dict[str, float] = {}

    # Tune saves and restores this with the experiment.
    def get_state(self) -> dict[str, Any]:
        return {"search": self.search, "trials": self.trials, "epochs": self.epochs}

    def set_state(self, state: dict[str, Any]) -> None:
        self.trials, self.epochs = state["trials"], state["epochs"]
        self.search = {**state["search"], "status": "running", "ended_at": None}

    def setup(self, **info: Any) -> None:
        self._flush("searches")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.trials:  # retried or restored: keep the summary so far
            self.trials[trial.trial_id]["status"] = "running"
        else:
            config = TrainConfig.parse(trial.config).model_dump()
            self.trials[trial.trial_id] = {
                "search_id": self.search_id,
                "trial_id": trial.trial_id,
                **config,
                "status": "running",
                "stopped_at_epoch": None,
                "error": None,
                "epochs_run": 0,
                "wall_s": 0.0,
                "started_at": now(),
                "ended_at": None,
                **{f"final_{m}": math.nan for m in METRICS if m != "epoch"},
                **{f"best_{m}": math.nan for m in self.best},
                "best_epoch": None,
            }
        # Wall time counts every attempt of a trial: start the clock at what earlier attempts used.
        self._started[trial.trial_id] = time.monotonic() - self.trials[trial.trial_id]["wall_s"]
        self._flush("trials")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if "epoch" not in result:
            return
        row = {"search_id": self.search_id, "trial_id": trial.trial_id, "seed": trial.config.get("seed")}
        row.update({k: result.get(k) for k in REPORTED})
        row.update(
            checkpoint_path=result.get("checkpoint_path"),
            time_total_s=result.get("time_total_s"),
            node_ip=result.get("node_ip"),
            reported_at=now(),
        )
        self.epochs.append(row)
        summary = self.trials[trial.trial_id]
        summary["epochs_run"] = int(result["epoch"])
        summary["wall_s"] = self._wall(trial.trial_id)
        for m in METRICS:
            if m != "epoch":
                summary[f"final_{m}"] = result.get(m)
        for m, direction in self.best.items():
            value, best = result.get(m), summary[f"best_{m}"]
            if value is not None and not math.isnan(value) and (math.isnan(best) or (value > best if direction == "max" else value < best)):
                summary[f"best_{m}"] = value
                if m == self.metric:
                    summary["best_epoch"] = int(result["epoch"])
        self._flush("epochs", "trials")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        summary = self.trials[trial.trial_id]
        finished = summary["epochs_run"] >= summary["epochs"]
        summary["status"] = "completed" if finished else "stopped"
        summary["stopped_at_epoch"] = None if finished else summary["epochs_run"]
        self._end(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        summary = self.trials[trial.trial_id]
        summary["status"] = "errored"
        summary["error"] = _error_text(trial)
        self._end(trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.finish("completed")

    def finish(self, status: str) -> None:
        """Mark the search ended (``completed``, ``interrupted`` or ``failed``)."""
        if self.search.get("ended_at"):
            return
        self.search.update(status=status, ended_at=now(), num_trials=len(self.trials))
        self._flush("searches", "trials", "epochs")

    def _wall(self, trial_id: str) -> float:
        started = self._started.get(trial_id)
        return time.monotonic() - started if started is not None else self.trials[trial_id]["wall_s"]

    def _end(self, trial_id: str) -> None:
        summary = self.trials[trial_id]
        summary["wall_s"] = self._wall(trial_id)
        self._started.pop(trial_id, None)
        summary["ended_at"] = now()
        self._flush("trials")

    def _flush(self, *tables: str) -> None:
        rows = {
            "searches": [self.search],
            "trials": list(self.trials.values()),
            "epochs": self.epochs,
        }
        for table in tables:
            if rows[table]:
                try:
                    self.store.write(table, self.search_id, rows[table])
                except OSError as exc:  # the next flush rewrites everything: warn, do not kill the search
                    log.warning("could not write %s for %s: %s", table, self.search_id, exc)


def _error_text(trial: Any) -> str:
    path = trial.error_file
    if path and Path(path).exists():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        return lines[-1][:500] if lines else "error"
    return "error"
