"""What a search already did, read from the store's ledger, and what is left to run.

A search is resumed (or extended) by running it again under the same name. Nothing is taken from Tune's
experiment snapshot, which lags the ledger: the ledger's trials are matched to the space's configurations
by their config, so

- a trial that ended (``completed``, or ``stopped`` by ASHA) is not run again;
- a trial that was running or errored runs again under its old trial id, so its Train run finds its last
  checkpoint and continues from there, and its epochs land on its old rows (the latest attempt winning);
- a configuration the ledger does not have (a grid value or seed added since) runs as a new trial.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from results.store import Store
from results.tables import connect, retrying
from search.space import Space
from trainable.config import TrainConfig, identity_names

ENDED = ("completed", "stopped")


def config_key(values: dict[str, Any]) -> str:
    """A trial's identity: its full, validated config (defaults filled in), hashed under the key names trial ids
    were first made with (``identity_names``), so that a renamed key changes no stored trial's identity (the
    store's views read an old row's columns under today's names: ``results.tables``)."""
    config = TrainConfig.parse({k: v for k, v in values.items() if k in TrainConfig.model_fields}).model_dump()
    return hashlib.sha1(json.dumps(identity_names(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def group_key(values: dict[str, Any]) -> str:
    """A configuration across seeds (what Optuna sees as one trial)."""
    return config_key({**values, "seed": 0})


@dataclass
class Pins:
    """Configs that must run under an earlier trial's id (to resume its checkpoint and its rows).

    Shared by the driver's callback and every trial's function (pickled), which both see a trial's config.
    """

    ids: dict[str, str] = field(default_factory=dict)  # config key -> ledger trial id
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # ledger trial id -> epoch -> metric

    def trial_id(self, config: dict[str, Any], tune_id: str) -> str:
        return self.ids.get(config_key(config), tune_id)


@dataclass
class Earlier:
    """The ledger's view of one search: its latest row, its trials, and each trial's metric per epoch."""

    search: dict[str, Any] | None
    trials: list[dict[str, Any]]
    curves: dict[str, dict[int, float]]

    @classmethod
    def load(cls, store: Store, search_id: str, metric: str) -> "Earlier":
        def read() -> "Earlier":
            con = connect(store, search_id)
            searches = con.sql("SELECT * FROM searches").to_arrow_table().to_pylist()
            if not searches:
                return cls(None, [], {})
            trials = con.sql("SELECT * FROM trials").to_arrow_table().to_pylist()
            curves: dict[str, dict[int, float]] = {}
            if trials and metric in [r[0] for r in con.execute("DESCRIBE epochs").fetchall()]:
                for trial_id, epoch, value in con.execute(f'SELECT trial_id, epoch, "{metric}" FROM epochs ORDER BY epoch').fetchall():
                    curves.setdefault(trial_id, {})[int(epoch)] = value
            return cls(searches[0], trials, curves)

        return retrying(read)

    def ended(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["status"] in ENDED]


@dataclass
class Plan:
    """What a run of the space does: which grid points remain, which ids to reuse, what Optuna and ASHA know."""

    pins: Pins
    ended: list[dict[str, Any]]  # ledger rows of trials that are not run again
    points: list[dict[str, Any]] | None = None  # grid: the points left to run
    num_trials: int = 0  # trials Tune still starts


def plan(space: Space, earlier: Earlier) -> Plan:
    """Match the ledger's trials to the space's configurations; see the module's docstring."""
    ended_keys = {config_key(t): t for t in earlier.ended()}
    pins = Pins()
    unfinished = [t for t in earlier.trials if t["status"] not in ENDED]
    for trial in unfinished:
        key = config_key(trial)
        if key not in ended_keys and key not in pins.ids:  # two unfinished trials of one config: the first resumes
            pins.ids[key] = trial["trial_id"]
            pins.curves[trial["trial_id"]] = earlier.curves.get(trial["trial_id"], {})
    if space.spec.search.type == "grid":
        cells = {config_key({**space.base, **p}): p for p in space.grid_points()}
        points = [p for key, p in cells.items() if key not in ended_keys]
        ended = [t for t in earlier.ended() if config_key(t) in cells]
        return Plan(pins, ended, points, len(points))
    ended = earlier.ended()
    return Plan(pins, ended, None, max(0, space.num_trials - len(ended)))
