"""A validated space as a Ray Tune experiment whose every trial fits a Ray Train torch run (``search.backend``).

Deadlock-free on any number of CPUs: a trial's driver function asks only for a sliver of the custom
``TRAIN_DRIVER`` resource, never for a CPU its own Train workers need: on a small machine, drivers holding CPUs
would leave none for their workers, and every trial would wait forever.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import optuna
import pyarrow.fs as pafs
import ray
from ray import tune
from ray.tune.schedulers import TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from results.store import Store
from search.resume import ENDED, Earlier, Pins, Plan, group_key
from search.schedulers import GroupedASHA, ResumableASHA
from search.space import Param, Space
from search.tensorboard import EpochTensorBoard, TrialFolder, searched_keys
from search.trial import run_trial

log = logging.getLogger(__name__)

DRIVER_RESOURCE = "TRAIN_DRIVER"
DRIVER_SHARE = 0.01


class EpochOptunaSearch(OptunaSearch):
    """Optuna's TPE, told what ASHA did, with each configuration repeated over the space's seeds.

    Tune's own ``OptunaSearch`` reports intermediate values by ``training_iteration`` (which restarts when a
    trial is retried) and tells Optuna that a trial ASHA stopped after one epoch is COMPLETE, so TPE ranks a
    1-epoch value against full runs. Here intermediate values are reported by ``epoch`` and a trial stopped
    before ``max_epoch`` is told as PRUNED: TPE then ranks it below finished trials, by how far it got.
    With several seeds, the trials of one configuration form a group: Optuna sees one trial whose value is
    the mean over seeds, pruned if any seed was stopped.

    A resumed search (``resume``) tells the study every group the ledger holds complete, and proposes each
    incomplete group again, first, for the seeds it still lacks. With a journal (``journal_storage``) the study
    already holds what earlier runs told it: a group found there finished is not added again, and a trial an
    earlier driver left running or waiting (it died before the group ended) is marked failed, since the ledger's
    view of that group is told or proposed anew.
    """

    def __init__(self, *args: Any, seeds: list[int], max_epoch: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seeds = seeds
        self.max_epoch = max_epoch
        self.groups: dict[str, list[str]] = {}  # first trial id -> trial ids of the group
        self.group_of: dict[str, str] = {}
        self.curves: dict[str, dict[int, float]] = {}  # trial id -> epoch -> metric
        self.outcome: dict[str, str] = {}  # trial id -> completed / stopped / errored
        self.configs: dict[str, dict] = {}  # first trial id -> the configuration Optuna proposed
        self._open: str | None = None
        self._seeds_left: list[int] = []
        self._prior: dict[int, dict[int, float]] = {}  # seed -> epochs an unfinished trial of the open group ran
        self._history: dict[str, list[dict[str, Any]]] = {}  # group key -> the ledger's trials
        self._applied = False  # the history told to the study, at the first ``suggest``
        self._reopen: list[list[dict[str, Any]]] = []  # incomplete groups, in the order they were enqueued
        self._earlier_curves: dict[str, dict[int, float]] = {}

    def resume(self, earlier: Earlier) -> None:
        """Take the ledger's trials of this search; applied at the first ``suggest``, once the study exists."""
        for trial in earlier.trials:
            self._history.setdefault(group_key(trial), []).append(trial)
        self._earlier_curves = earlier.curves

    def _apply_history(self) -> None:
        told = [t.params for t in self._ot_study.get_trials(deepcopy=False) if t.state.is_finished()]
        stale = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
        # A study cannot fail a trial it did not hand out in this process; its storage (Optuna's own API) can.
        for left in self._ot_study.get_trials(deepcopy=False, states=stale):
            self._ot_study._storage.set_trial_state_values(left._trial_id, optuna.trial.TrialState.FAIL)
        for members in self._history.values():
            params = {name: members[0][name] for name in self._space}
            ended = {t["seed"]: t for t in members if t["status"] in ENDED}
            if all(seed in ended for seed in self.seeds) and params in told:
                told.remove(params)
            elif all(seed in ended for seed in self.seeds):
                group = [ended[seed] for seed in self.seeds]
                state, value, intermediate = self._verdict(
                    [self._earlier_curves.get(t["trial_id"], {}) for t in group], [t["status"] for t in group]
                )
                self._ot_study.add_trial(optuna.trial.create_trial(
                    params=params, distributions=self._space, value=value, state=state, intermediate_values=intermediate
                ))  # fmt: skip
            else:
                self._ot_study.enqueue_trial(params)
                self._reopen.append(members)
        self._history, self._applied = {}, True

    def suggest(self, trial_id: str) -> dict | None:
        if not self._applied:
            self._apply_history()
        if not self._seeds_left:
            config = super().suggest(trial_id)
            if config is None or config == self.FINISHED:
                return config
            self._open = trial_id
            self.groups[trial_id] = []
            self.configs[trial_id] = config
            self._seeds_left, self._prior = list(self.seeds), {}
            if self._reopen:  # the study hands out enqueued configurations first, in order
                for member in self._reopen.pop(0):
                    curve = self._earlier_curves.get(member["trial_id"], {})
                    if member["status"] in ENDED and member["seed"] in self._seeds_left:
                        self._join(member["trial_id"])
                        self.outcome[member["trial_id"]], self.curves[member["trial_id"]] = member["status"], dict(curve)
                        self._seeds_left.remove(member["seed"])
                    elif member["status"] not in ENDED:
                        self._prior[member["seed"]] = curve
        seed = self._seeds_left.pop(0)
        self._join(trial_id)
        if seed in self._prior:
            self.curves[trial_id] = dict(self._prior.pop(seed))
        return {**self.configs[str(self._open)], "seed": seed}

    def _join(self, trial_id: str) -> None:
        self.groups[str(self._open)].append(trial_id)
        self.group_of[trial_id] = str(self._open)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result and "epoch" in result:
            self.curves.setdefault(trial_id, {})[int(result["epoch"])] = float(result[self.metric])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.group_of or trial_id in self.outcome:
            return
        last = max(self.curves.get(trial_id, {0: math.nan}))
        self.outcome[trial_id] = "errored" if error else ("completed" if last >= self.max_epoch else "stopped")
        leader = self.group_of[trial_id]
        group = self.groups[leader]
        if len(group) < len(self.seeds) or any(t not in self.outcome for t in group):
            return
        state, value, intermediate = self._verdict([self.curves.get(t, {}) for t in group], [self.outcome[t] for t in group])
        ot_trial = self._ot_trials[leader]
        for epoch, mean in intermediate.items():
            ot_trial.report(mean, epoch)
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(leader)

    @staticmethod
    def _verdict(
        curves: list[dict[int, float]], outcomes: list[str]
    ) -> tuple[optuna.trial.TrialState, float | None, dict[int, float]]:
        """What Optuna is told of a group: its state, its value, the mean over seeds at each shared epoch."""
        kept = [c for c, o in zip(curves, outcomes) if o != "errored"]
        if not kept:
            return optuna.trial.TrialState.FAIL, None, {}
        shared = sorted(set.intersection(*(set(c) for c in kept)))
        means = {epoch: sum(c[epoch] for c in kept) / len(kept) for epoch in shared}
        if "stopped" in outcomes or not shared:
            return optuna.trial.TrialState.PRUNED, None, means
        return optuna.trial.TrialState.COMPLETE, means[shared[-1]], means


def param_space(space: Space) -> dict[str, Any]:
    """Tune's ``param_space``: constants from the base config and the sampled parameters.

    A grid search lists its trials explicitly (``Space.grid_points``), so a cell that sets several keys
    at once stays one flat config. Tune only accepts a preset point whose every key is in the
    ``param_space``, so each key a point sets (grid parameters, cell keys, ``seed``) is declared here as
    a choice of the values the points give it; the points then replace every sample.
    """
    out: dict[str, Any] = dict(space.base)
    for name, param in space.spec.space.items():
        if param.kind != "grid":
            out[name] = _domain(param)
    if space.spec.search.type == "grid":
        values: dict[str, list[Any]] = {}
        for point in space.grid_points():
            for key, value in point.items():
                if value not in values.setdefault(key, []):
                    values[key].append(value)
        out.update({key: tune.choice(options) for key, options in values.items()})
    return out


def _domain(param: Param) -> Any:
    values = list(param.values)
    if param.kind == "choice":
        return tune.choice(values)
    if param.kind == "uniform":
        return tune.uniform(*values)
    if param.kind == "loguniform":
        return tune.loguniform(*values)
    return tune.randint(values[0], values[1] + 1)  # int: both bounds included


def journal_path(store: Store, search_id: str) -> str | None:
    """Where an Optuna search keeps its study, ``<store>/optuna/<search id>.log``; None on a store that is not a
    folder (Optuna's journal file needs a local or NFS path: such a search's study lives in memory)."""
    if not isinstance(store.fs, pafs.LocalFileSystem):
        return None
    return os.path.join(store.root, "optuna", f"{search_id}.log")


def journal_storage(path: str) -> optuna.storages.JournalStorage:
    """Optuna's journal file storage at ``path``: every change to the study appended as a line, so a resumed search
    appends to its earlier runs' file and ``optuna-dashboard <path>`` shows the study while it runs."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))


def searcher(
    space: Space,
    max_concurrent: int | None = None,
    plan: Plan | None = None,
    earlier: Earlier | None = None,
    journal: str | None = None,
    study_name: str = "optuna",
) -> EpochOptunaSearch | BasicVariantGenerator:
    """The grid's own generator over the points left to run, limited to ``max_concurrent`` (Tune ignores
    ``max_concurrent_trials`` for it), or seeded Optuna, which ``build_tuner`` limits through Tune; its study named
    ``study_name`` in the journal file ``journal`` (None: in memory)."""
    spec = space.spec
    if spec.search.type == "grid":
        points = space.grid_points() if plan is None else plan.points
        return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent or 0)
    # A resumed search draws from another stream, fixed by what the ledger holds: the first run's seed would
    # replay its first random proposals, configurations that ran already.
    resumed = len(earlier.trials) if earlier is not None else 0
    seed = spec.search.seed if not resumed else spec.search.seed * 1_000_003 + resumed
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.search.startup_trials)
    storage = journal_storage(journal) if journal else None
    algo = EpochOptunaSearch(
        metric=spec.metric, mode=spec.mode, sampler=sampler, seeds=spec.seed_list, max_epoch=space.epochs,
        storage=storage, study_name=study_name,
    )  # fmt: skip
    if earlier is not None:
        algo.resume(earlier)
    return algo


def scheduler(space: Space, plan: Plan | None = None, earlier: Earlier | None = None) -> TrialScheduler | None:
    """The space's scheduler (``search.schedulers``), starting from the rungs of what ``plan`` keeps; None: FIFO."""
    spec = space.spec
    if spec.scheduler.type == "none":
        return None
    ended = [] if plan is None or earlier is None else [(t, earlier.curves.get(t["trial_id"], {})) for t in plan.ended]
    common = dict(
        time_attr="epoch",  # monotone across retries, unlike training_iteration
        max_t=space.max_t,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
        pins=None if plan is None else plan.pins,
    )
    if spec.scheduler.grouped:
        return GroupedASHA(
            seeds=spec.seed_list,
            synchronous=spec.scheduler.type == "halving",
            trials=space.num_trials,
            history=[(t, t["status"], curve) for t, curve in ended],
            **common,
        )
    return ResumableASHA(brackets=1, history={t["trial_id"]: curve for t, curve in ended}, **common)


def trial_limit(space: Space, max_concurrent: int | None) -> int | None:
    """How many trials may be live (started and not ended) at once, for ``max_concurrent`` running.

    Trials judged alone: ``max_concurrent``. Seeds together: whole configurations, enough of them to keep
    ``max_concurrent`` busy while some seeds wait at a rung for the others (a paused trial is still live).
    Synchronous halving: every trial, since a rung waits for all of them (each live trial waits for resources
    when more are live than run).
    """
    sch = space.spec.scheduler
    if max_concurrent is None or sch.type == "halving":
        return None
    if not sch.grouped:
        return max_concurrent
    seeds = len(space.spec.seed_list)
    return math.ceil((max_concurrent + seeds - 1) / seeds) * seeds


def trainable(space: Space, train_storage: str, store: Store, search_id: str, pins: Pins) -> Any:
    """The trial function with its resources: a sliver of TRAIN_DRIVER, the CPUs and GPUs go to Train workers."""
    res = space.spec.resources
    fn = tune.with_parameters(
        run_trial, train_storage=train_storage, workers=res.workers, cpus=res.cpus_per_worker, gpus=res.gpus_per_worker,
        store=store, search_id=search_id, pins=pins,
    )  # fmt: skip
    return tune.with_resources(fn, {DRIVER_RESOURCE: DRIVER_SHARE})


def build_tuner(
    space: Space,
    store: Store,
    search_id: str,
    callbacks: list,
    max_concurrent: int | None,
    plan: Plan,
    earlier: Earlier,
) -> tune.Tuner:
    """The experiment of what ``plan`` leaves to run; at most ``max_concurrent`` trials at once (None: as many
    as Tune starts). Tune's experiment state and each trial's TensorBoard files go under ``<store>/tune/<search id>``
    (``search.tensorboard``), Train's checkpoints under ``<store>/train``, an Optuna study under ``<store>/optuna``."""
    spec = space.spec
    limit = trial_limit(space, max_concurrent)
    algo = searcher(space, limit, plan, earlier, journal_path(store, search_id), study_name=search_id)
    return tune.Tuner(
        trainable(space, f"{store.uri}/train/{search_id}", store, search_id, plan.pins),
        param_space=param_space(space),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            search_alg=algo,
            scheduler=scheduler(space, plan, earlier),
            num_samples=plan.num_trials,
            max_concurrent_trials=limit if isinstance(algo, EpochOptunaSearch) else None,
            trial_dirname_creator=TrialFolder(searched_keys(space), plan.pins),
        ),
        run_config=tune.RunConfig(
            name=search_id,
            storage_path=f"{store.uri}/tune",
            callbacks=[*callbacks, EpochTensorBoard()],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            verbose=1,  # the status table, not every result: per-epoch lines come from the workers' logs
        ),
    )
