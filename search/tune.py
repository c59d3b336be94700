"""A validated space as a Ray Tune experiment whose every trial fits a Ray Train ``TorchTrainer``.

Deadlock-free on any number of CPUs: a trial's driver function asks only for a sliver of the custom
``TRAIN_DRIVER`` resource, never for a CPU its own Train workers need (../shared/RAY_NOTES.md).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
import ray
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from search.space import Param, Space
from trainable.loop import train_loop_per_worker

log = logging.getLogger(__name__)

DRIVER_RESOURCE = "TRAIN_DRIVER"
DRIVER_SHARE = 0.01


def run_trial(config: dict[str, Any], train_storage: str, workers: int, cpus: float, gpus: float) -> None:
    """One Tune trial: fit a ``TorchTrainer`` on this trial's config; its reports reach Tune.

    The Train run is named after the trial, so when Tune retries a failed trial the new trainer finds the
    old run's checkpoint and resumes from it.
    """
    trial_id = tune.get_context().get_trial_id()
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",
            storage_path=train_storage,
            callbacks=[TuneReportCallback()],
            # Tune retries a failed trial (max_failures of the space). A worker group waiting for resources
            # keeps waiting (Train's default): on a cluster that is the autoscaler at work, and a local
            # instance never starts more trials than fit (search.runner).
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()


class EpochOptunaSearch(OptunaSearch):
    """Optuna's TPE, told what ASHA did, with each configuration repeated over the space's seeds.

    Tune's own ``OptunaSearch`` reports intermediate values by ``training_iteration`` (which restarts when a
    trial is retried) and tells Optuna that a trial ASHA stopped after one epoch is COMPLETE, so TPE ranks a
    1-epoch value against full runs. Here intermediate values are reported by ``epoch`` and a trial stopped
    before ``max_epoch`` is told as PRUNED: TPE then ranks it below finished trials, by how far it got.
    With several seeds, the trials of one configuration form a group: Optuna sees one trial whose value is
    the mean over seeds, pruned if any seed was stopped.
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

    def suggest(self, trial_id: str) -> dict | None:
        group = self.groups.get(self._open) if self._open else None
        if group is None or len(group) == len(self.seeds):
            config = super().suggest(trial_id)
            if config is None or config == self.FINISHED:
                return config
            self._open, group = trial_id, [trial_id]
            self.groups[trial_id] = group
            self.configs[trial_id] = config
        else:
            group.append(trial_id)
        self.group_of[trial_id] = self._open
        return {**self.configs[self._open], "seed": self.seeds[len(group) - 1]}

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
        ot_trial = self._ot_trials[leader]
        curves = [self.curves.get(t, {}) for t in group if self.outcome[t] != "errored"]
        if not curves:
            self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.FAIL)
            self._completed_trials.add(leader)
            return
        shared = sorted(set.intersection(*(set(c) for c in curves)))
        for epoch in shared:
            ot_trial.report(sum(c[epoch] for c in curves) / len(curves), epoch)
        if any(self.outcome[t] == "stopped" for t in group) or not shared:
            self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.PRUNED)
        else:
            final = sum(c[shared[-1]] for c in curves) / len(curves)
            self._ot_study.tell(ot_trial, final, state=optuna.trial.TrialState.COMPLETE)
        self._completed_trials.add(leader)


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


def searcher(space: Space, max_concurrent: int | None = None) -> EpochOptunaSearch | BasicVariantGenerator:
    """The grid's own generator, limited to ``max_concurrent`` (Tune ignores ``max_concurrent_trials`` for
    it), or seeded Optuna, which ``build_tuner`` limits through Tune."""
    spec = space.spec
    if spec.search.type == "grid":
        return BasicVariantGenerator(points_to_evaluate=space.grid_points(), max_concurrent=max_concurrent or 0)
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed, n_startup_trials=spec.search.startup_trials)
    return EpochOptunaSearch(
        metric=spec.metric, mode=spec.mode, sampler=sampler, seeds=spec.seed_list, max_epoch=space.epochs
    )


def scheduler(space: Space) -> ASHAScheduler | None:
    spec = space.spec
    if spec.scheduler.type != "asha":
        return None
    return ASHAScheduler(
        time_attr="epoch",  # monotone across retries, unlike training_iteration
        max_t=space.max_t,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
        brackets=1,
    )


def trainable(space: Space, train_storage: str) -> Any:
    """The trial function with its resources: a sliver of TRAIN_DRIVER, the CPUs and GPUs go to Train workers."""
    res = space.spec.resources
    fn = tune.with_parameters(
        run_trial, train_storage=train_storage, workers=res.workers, cpus=res.cpus_per_worker, gpus=res.gpus_per_worker
    )
    return tune.with_resources(fn, {DRIVER_RESOURCE: DRIVER_SHARE})


def build_tuner(
    space: Space, tune_storage: str, train_storage: str, search_id: str, callbacks: list, max_concurrent: int | None
) -> tune.Tuner:
    """The experiment; at most ``max_concurrent`` trials run at once (None: as many as Tune starts)."""
    spec = space.spec
    algo = searcher(space, max_concurrent)
    return tune.Tuner(
        trainable(space, train_storage),
        param_space=param_space(space),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            search_alg=algo,
            scheduler=scheduler(space),
            num_samples=space.num_trials,
            max_concurrent_trials=max_concurrent if isinstance(algo, EpochOptunaSearch) else None,
        ),
        run_config=tune.RunConfig(
            name=search_id,
            storage_path=tune_storage,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            verbose=1,  # the status table, not every result: per-epoch lines come from the workers' logs
        ),
    )


def restore_tuner(space: Space, path: str, train_storage: str) -> tune.Tuner:
    """Continue an interrupted search: unfinished and errored trials resume from their checkpoints."""
    return tune.Tuner.restore(
        path, trainable(space, train_storage), resume_errored=True, param_space=param_space(space)
    )
