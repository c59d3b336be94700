"""The schedulers a space can ask for, as Ray Tune ``TrialScheduler`` classes that a real search and the
simulator (``search.simulate``) both run.

- ``ResumableASHA``: Tune's ASHA, each trial judged alone (``scheduler: {type: asha}``), starting from the
  rungs of a resumed search.
- ``GroupedASHA``: ASHA whose rungs compare *configurations* by their mean over seeds, and which stops or
  continues a configuration as a whole (``seeds: together``). With ``synchronous`` it is synchronous
  successive halving (``type: halving``): a rung decides once every configuration of the search has reached
  it, in a fixed order, so the decisions do not depend on which report arrived first.

Waiting at a rung uses Tune's own ``PAUSE``: the trial's process ends and, once its configuration is cleared
to go on, it starts again and its Train run continues from its last checkpoint (``search.trial``), as a
retried trial does. A trial at a rung whose other seeds are all within one epoch of it goes on into the next
epoch instead (a restart costs more than an epoch here) and waits there if the verdict has not come; when the
verdict is to stop, the configuration's other trials are stopped at once, wherever they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search.resume import Pins, group_key


class ResumableASHA(ASHAScheduler):
    """ASHA that starts from the rungs of a resumed search: the ledger's curves are replayed into them.

    Ended trials are replayed once; a trial resuming mid-run gets its earlier epochs replayed under its new
    Tune id, so it is not judged again at the rungs it already passed.
    """

    def __init__(self, *args: Any, history: dict[str, dict[int, float]] | None = None, pins: Pins | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._history = history or {}
        self._pins = pins or Pins()

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        for trial_id, curve in self._history.items():
            self._replay(trial_id, curve)
        self._history = {}
        prior = self._pins.curves.get(self._pins.trial_id(trial.config, trial.trial_id))
        if prior:
            self._replay(trial.trial_id, prior)

    def _replay(self, trial_id: str, curve: dict[int, float]) -> None:
        bracket = self._brackets[0]
        for epoch in sorted(curve):
            if _real(curve[epoch]):
                bracket.on_result(SimpleNamespace(trial_id=trial_id), epoch, self._metric_op * curve[epoch])


class GroupedASHA(ASHAScheduler):
    """ASHA over configurations: every seed of a configuration reaches each rung, the rung ranks the
    configuration by its mean over those seeds, and the verdict (stop or go on) holds for all its seeds.

    Ray Tune's own ``Repeater`` warns against repeats under any scheduler, since per-seed ASHA mixes budgets:
    one seed of a configuration stopped at the first rung, two run to the end. Here the rung's value is the
    mean over the configuration's seeds (a seed whose trial errored is left out), fed into Tune's ASHA bracket
    under the configuration's key, so the cut-off rule is ASHA's own.

    ``synchronous``: a rung decides once all of the search's ``trials`` exist and every configuration has reached it
    or been stopped before it (trials are counted, not configurations: a searcher may propose one twice); it keeps the best ``1 / reduction_factor`` of those that reached it (at least one), ties
    going to the configuration proposed first. Nothing then depends on the order reports arrive in.

    ``history``: the ledger's ended trials of a resumed search, as (config, status, curve); their rung values
    are replayed and their configurations' verdicts taken from how they ended. ``pins``: a trial resuming
    mid-run gets its earlier epochs back, so it is not judged again at the rungs it passed.
    """

    def __init__(
        self,
        *args: Any,
        seeds: list[int],
        synchronous: bool = False,
        trials: int = 0,
        history: Iterable[tuple[dict[str, Any], str, dict[int, float]]] = (),
        pins: Pins | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, brackets=1, **kwargs)
        self._seeds = list(seeds)
        self._synchronous = synchronous
        self._trials = trials
        self._pins = pins or Pins()
        self._milestones = sorted(int(m) for m, _ in self._brackets[0]._rungs if m < self._max_t)
        self._order: list[str] = []  # configurations, in the order their first trial was added
        self._members: dict[str, list[Any]] = {}
        self._values: dict[str, dict[int, dict[int, float]]] = {}  # configuration -> seed -> epoch -> value (signed)
        self._failed: dict[str, set[int]] = {}  # seeds whose trial errored: left out of the mean
        self._decided: dict[str, dict[int, str]] = {}  # configuration -> rung -> CONTINUE / STOP
        self._stopped: set[str] = set()
        self._pending_history = list(history)
        self._added = len(self._pending_history)  # trials added, the ledger's ended ones included

    # -- what a configuration knows

    def _key(self, trial: Any) -> str:
        return group_key(trial.config)

    def _add_configuration(self, key: str) -> None:
        if key not in self._values:
            self._order.append(key)
            self._members[key] = []
            self._values[key] = {}
            self._failed[key] = set()
            self._decided[key] = {}

    def _at(self, key: str, rung: int) -> list[float] | None:
        """The rung's value of every seed still counted, or None while some seed has not reached it."""
        counted = [s for s in self._seeds if s not in self._failed[key]]
        values = [self._values[key].get(s, {}).get(rung) for s in counted]
        return None if not counted or any(v is None for v in values) else values  # type: ignore[misc]

    def waiting(self, trial: Any) -> bool:
        """Whether ``trial`` has passed a rung its configuration has no verdict for yet."""
        key = self._key(trial)
        if key in self._stopped:
            return False
        last = max(self._values[key].get(trial.config["seed"], {0: 0.0}))
        return any(m <= last and m not in self._decided[key] for m in self._milestones)

    # -- Tune's scheduler interface

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        for config, status, curve in self._pending_history:
            self._remember(config, status, curve)
        self._replay_history(dict.fromkeys(group_key(config) for config, _, _ in self._pending_history))
        self._pending_history = []
        key = self._key(trial)
        self._add_configuration(key)
        self._members[key].append(trial)
        self._added += 1
        prior = self._pins.curves.get(self._pins.trial_id(trial.config, trial.trial_id))
        if prior:
            seed = trial.config["seed"]
            self._values[key][seed] = {e: self._metric_op * v for e, v in prior.items() if _real(v)}

    def _remember(self, config: dict[str, Any], status: str, curve: dict[int, float]) -> None:
        key = group_key(config)
        self._add_configuration(key)
        self._values[key][config["seed"]] = {e: self._metric_op * v for e, v in curve.items() if _real(v)}
        if status == "stopped":
            self._stopped.add(key)

    def _replay_history(self, keys: Iterable[str]) -> None:
        """Feed the rungs every value the ledger's ended configurations reached, as passed rungs."""
        for key in keys:
            for rung in self._milestones:
                values = self._at(key, rung)
                if values is None:
                    break
                self._brackets[0].on_result(SimpleNamespace(trial_id=key), rung, sum(values) / len(values))
                self._decided[key][rung] = TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        key = self._key(trial)
        if key in self._stopped:
            return TrialScheduler.STOP
        epoch, seed = int(result[self._time_attr]), trial.config["seed"]
        self._values[key].setdefault(seed, {})[epoch] = self._metric_op * float(result[self._metric])
        if epoch >= self._max_t:
            return TrialScheduler.CONTINUE
        self._decide(tune_controller, trial)
        if key in self._stopped:
            return TrialScheduler.STOP
        open_rungs = [m for m in self._milestones if m <= epoch and m not in self._decided[key]]
        if not open_rungs:
            return TrialScheduler.CONTINUE
        rung = open_rungs[0]
        # Go on into one more epoch only from the rung itself, while every other seed is within an epoch of it,
        # and never into the last epoch, which would end the trial without its configuration's verdict.
        if self._synchronous or epoch > rung or epoch + 1 >= self._max_t or self._behind(key, rung):
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def _behind(self, key: str, rung: int) -> bool:
        """Whether some seed of ``key`` is more than one epoch short of ``rung``."""
        for seed in self._seeds:
            if seed in self._failed[key]:
                continue
            reached = max(self._values[key].get(seed, {0: 0.0}))
            if reached < rung - 1:
                return True
        return False

    def _decide(self, tune_controller: Any, reporting: Any = None) -> None:
        """Give every verdict that the values in hand allow, in rung order."""
        for rung in self._milestones:
            if self._synchronous:
                self._decide_synchronous(rung)
            else:
                for key in self._order:
                    if key in self._stopped or rung in self._decided[key] or any(m < rung and m not in self._decided[key] for m in self._milestones):
                        continue
                    values = self._at(key, rung)
                    if values is None:
                        continue
                    verdict = self._brackets[0].on_result(SimpleNamespace(trial_id=key), rung, sum(values) / len(values))
                    self._decided[key][rung] = verdict
                    if verdict == TrialScheduler.STOP:
                        self._stopped.add(key)
        self._stop_members(tune_controller, reporting)

    def _decide_synchronous(self, rung: int) -> None:
        alive = [k for k in self._order if k not in self._stopped and rung not in self._decided[k]]
        if not alive or self._added < self._trials:
            return
        means = {}
        for key in alive:
            values = self._at(key, rung)
            if values is None:
                return  # the rung waits for every configuration
            means[key] = sum(values) / len(values)
        keep = max(1, math.floor(len(means) / self.rf))
        ranked = sorted(means, key=lambda k: (-means[k], self._order.index(k)))
        for i, key in enumerate(ranked):
            self._decided[key][rung] = TrialScheduler.CONTINUE if i < keep else TrialScheduler.STOP
            if i >= keep:
                self._stopped.add(key)

    @property
    def rf(self) -> float:
        return float(self._brackets[0].rf)

    def _stop_members(self, tune_controller: Any, reporting: Any) -> None:
        """Every other trial of a stopped configuration ends now, waiting, pending or running (the reporting one
        ends by the verdict this scheduler returns for its result)."""
        for key in self._order:  # in a fixed order (a set's order would change from run to run)
            if key not in self._stopped:
                continue
            for trial in self._members.get(key, []):
                if trial is not reporting and trial.status in (Trial.PAUSED, Trial.PENDING, Trial.RUNNING):
                    tune_controller.stop_trial(trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        key = self._key(trial)
        self._failed[key].add(trial.config["seed"])
        self._decide(tune_controller)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        pass  # every verdict was given from the results; a completed trial changes no rung

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        pass

    def choose_trial_to_run(self, tune_controller: Any) -> Any | None:
        """Paused trials whose configuration was cleared to go on first, then pending ones, in trial order; never
        a trial that waits on its configuration's verdict."""
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == Trial.PAUSED and self._key(trial) not in self._stopped and not self.waiting(trial):
                return trial
        for trial in trials:
            if trial.status == Trial.PENDING and self._key(trial) not in self._stopped:
                return trial
        return None

    def debug_string(self) -> str:
        kind = "synchronous successive halving" if self._synchronous else "ASHA with seeds together"
        return f"{kind}: {len(self._order)} configurations, {len(self._stopped)} stopped"


def _real(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
