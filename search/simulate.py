"""``python -m search simulate``: a space's scheduler and searcher run against recorded learning curves, in
simulated time, to measure how often a search finds the best configuration and what it spends doing so.

The curves are a search that ran every trial to its last epoch (``spaces/curves.yaml``; committed under
``bench/curves/``). The simulated search uses the very objects ``search run`` builds (``search.tune.searcher``
and ``search.tune.scheduler``: the seed-grouping Optuna, the grid, ASHA as resumed, seed-aware ASHA,
synchronous halving), wrapped as Tune wraps them (``ConcurrencyLimiter``, ``SearchGenerator``), and drives
them through Tune's scheduler and searcher interfaces the way Tune's controller does: a result goes to the
scheduler, then (unless it stopped the trial) to the searcher; a stopped or finished trial is completed in
both. What differs is the clock and the trials: a trial's epoch takes its recorded ``epoch_time_s`` and
reports its recorded metrics; a trial that starts, or restarts after a pause, first pays the recorded median
start-up (``startup_s + setup_s``); at most ``concurrency`` trials compute at once, the others wait for a slot
as a trial waits for CPUs on Ray. No Ray cluster, no training.

A proposed configuration is mapped to the nearest recorded one: every parameter the curves vary is scaled to
[0, 1] over its recorded values (on a log scale when the space samples it ``loguniform``), and the recorded
configuration with the least squared distance wins; a value that is not a number must be recorded exactly.
The space's seeds must be recorded seeds, and its epochs at most the recorded ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ray.tune.experiment import Experiment, Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator, Searcher

from results.report import varied_columns
from results.stats import best_configuration
from results.store import Store
from results.tables import connect
from search import tune as tuning
from search.space import Space

HIT_POINTS = 1.0  # a reported configuration within this many points of the true best is a hit


class CurvesError(ValueError):
    """Recorded curves that cannot stand in for a space's trials; the message says why."""


@dataclass(frozen=True)
class Recorded:
    """One recorded trial: per epoch its metric and how long the epoch took."""

    seed: int
    values: dict[int, float]
    seconds: dict[int, float]


@dataclass
class Curves:
    """A recorded full grid: for every configuration (its varied parameters) and seed, a trial's whole curve."""

    source: str
    metric: str
    mode: str
    names: list[str]
    configs: dict[tuple, dict[int, Recorded]]
    epochs: int
    start_s: float

    @classmethod
    def load(cls, spec: str, metric: str | None = None) -> "Curves":
        """``STORE[:SEARCH]``: a store folder or URI, and a search in it (a name or id; default its only one)."""
        store_uri, search = _split(spec)
        store = Store(store_uri)
        searches = store.searches()
        if not searches:
            raise CurvesError(f"--curves {spec}: no search in {store_uri}")
        if search is None:
            if len(searches) > 1:
                raise CurvesError(f"--curves {spec}: {len(searches)} searches in {store_uri}; name one as STORE:SEARCH ({', '.join(searches)})")
            search = searches[0]
        if search not in searches:
            raise CurvesError(f"--curves {spec}: no search {search!r} in {store_uri}; searches: {', '.join(searches)}")
        con = connect(store, search)
        own_metric, mode = con.execute("SELECT metric, mode FROM searches").fetchall()[0]
        metric = metric or own_metric
        names = [c for c in varied_columns(con) if c != "seed"]
        trials = con.sql("SELECT * FROM trials").to_arrow_table().to_pylist()
        columns = [r[0] for r in con.execute("DESCRIBE epochs").fetchall()]
        if metric not in columns:
            raise CurvesError(f"--curves {spec}: the epochs hold no {metric!r}")
        rows = con.execute(
            f'SELECT trial_id, epoch, "{metric}", epoch_time_s, startup_s, setup_s FROM epochs ORDER BY trial_id, epoch'
        ).fetchall()
        by_trial: dict[str, list[tuple]] = {}
        for row in rows:
            by_trial.setdefault(row[0], []).append(row)
        configs: dict[tuple, dict[int, Recorded]] = {}
        starts = []
        epochs = {int(t["epochs"]) for t in trials}
        if len(epochs) != 1:
            raise CurvesError(f"--curves {spec}: trials of different lengths ({sorted(epochs)} epochs)")
        last = epochs.pop()
        for trial in trials:
            curve = by_trial.get(trial["trial_id"], [])
            if trial["status"] != "completed" or len(curve) != last:
                raise CurvesError(
                    f"--curves {spec}: trial {trial['trial_id']} is {trial['status']} with {len(curve)} of {last} epochs; "
                    "curves must run every trial to its last epoch (scheduler: none)"
                )
            key = tuple(trial[n] for n in names)
            configs.setdefault(key, {})[int(trial["seed"])] = Recorded(
                int(trial["seed"]), {int(r[1]): float(r[2]) for r in curve}, {int(r[1]): float(r[3]) for r in curve}
            )
            first = curve[0]
            starts.append(sum(v for v in first[4:6] if v is not None and not math.isnan(v)))
        seeds = {frozenset(s) for s in configs.values()}
        if len(seeds) != 1:
            raise CurvesError(f"--curves {spec}: configurations were recorded on different seeds")
        return cls(f"{store_uri}:{search}", metric, mode, names, configs, last, statistics.median(starts))

    @property
    def seeds(self) -> list[int]:
        return sorted(next(iter(self.configs.values())))

    def final(self, key: tuple, epoch: int | None = None) -> float:
        """The mean over seeds of the configuration's value at ``epoch`` (default: the last)."""
        at = epoch or self.epochs
        return statistics.fmean(r.values[at] for r in self.configs[key].values())

    @property
    def better(self) -> Any:
        return max if self.mode == "max" else min

    def true_best(self) -> tuple:
        return self.better(self.configs, key=self.final)

    def regret(self, key: tuple) -> float:
        """How far the configuration's true mean is from the true best's, in the metric's units (>= 0)."""
        return abs(self.final(self.true_best()) - self.final(key))

    def params(self, key: tuple) -> dict[str, Any]:
        return dict(zip(self.names, key))

    def nearest(self, config: dict[str, Any], space: Space) -> tuple:
        """The recorded configuration closest to ``config`` (see the module's docstring)."""
        best, distance = None, math.inf
        for key in self.configs:
            total = 0.0
            for i, name in enumerate(self.names):
                total += self._distance(name, [k[i] for k in self.configs], key[i], config.get(name), space)
            if total < distance:
                best, distance = key, total
        if best is None or math.isinf(distance):
            wanted = ", ".join(f"{n}={config.get(n)!r}" for n in self.names)
            raise CurvesError(f"{space.path}: the proposal {wanted} has no recorded configuration in {self.source}")
        return best

    @staticmethod
    def _distance(name: str, recorded: list[Any], value: Any, wanted: Any, space: Space) -> float:
        if not all(_number(v) for v in [*recorded, wanted]):
            return 0.0 if value == wanted else math.inf
        log = name in space.spec.space and space.spec.space[name].kind == "loguniform"
        scale = (lambda v: math.log(v)) if log and min(recorded) > 0 and wanted > 0 else float  # noqa: E731
        span = scale(max(recorded)) - scale(min(recorded)) or 1.0
        return ((scale(value) - scale(wanted)) / span) ** 2

    def check(self, space: Space) -> None:
        """Refuse a space the curves cannot answer for: parameters they do not vary, seeds or epochs they lack."""
        unknown = [n for n in space.spec.space if n not in self.names]
        if unknown:
            raise CurvesError(
                f"{space.path}: space.{unknown[0]}: not varied in the curves {self.source}; they vary {', '.join(self.names)}"
            )
        missing = [s for s in space.spec.seed_list if s not in self.seeds]
        if missing:
            raise CurvesError(f"{space.path}: seeds: {missing} not recorded in {self.source} (recorded: {self.seeds})")
        if space.epochs > self.epochs:
            raise CurvesError(f"{space.path}: base.epochs: {space.epochs}, but the curves {self.source} end at epoch {self.epochs}")

    def spearman(self) -> list[dict[str, float]]:
        """Per epoch, the rank correlation over configurations between the mean over seeds then and at the end."""
        from scipy.stats import spearmanr

        keys = list(self.configs)
        final = [self.final(k) for k in keys]
        return [
            {"rung": epoch, "spearman": float(spearmanr([self.final(k, epoch) for k in keys], final).statistic)}
            for epoch in range(1, self.epochs + 1)
        ]


def _split(spec: str) -> tuple[str, str | None]:
    """``STORE[:SEARCH]``, where STORE may be a URI (``s3://bucket/path``) and SEARCH has no slash."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and "/" not in tail and not head.endswith(("s3", "gs", "file", "hdfs")):
        return head, tail
    return spec, None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Run:
    """What one simulated search did."""

    reported: tuple | None
    epochs: int
    wall_s: float
    anytime: list[tuple[int, float]]  # (epochs spent, regret of the configuration reported then)
    true_best_stopped: bool
    trials: list[dict[str, Any]] = field(default_factory=list)


class _Controller:
    """The part of Tune's controller the project's schedulers call (``get_trials``, ``stop_trial``)."""

    def __init__(self, sim: "_Simulation") -> None:
        self._sim = sim

    def get_trials(self) -> list[Trial]:
        return list(self._sim.trials)

    def stop_trial(self, trial: Trial) -> None:
        self._sim.stop(trial)


class _Simulation:
    def __init__(self, space: Space, curves: Curves, concurrency: int) -> None:
        self.space, self.curves, self.concurrency = space, curves, concurrency
        self.metric = space.spec.metric
        self.trials: list[Trial] = []
        self.key: dict[str, tuple] = {}
        self.created: dict[str, int] = {}  # trial id -> its place in creation order
        self.done: dict[str, int] = {}  # trial id -> epochs it has (its checkpoint)
        self.ended: dict[str, str] = {}  # trial id -> completed / stopped
        self.queue: list[Trial] = []  # running in Tune's sense, waiting for a slot
        self.busy: dict[str, tuple[float, Trial]] = {}  # trial id -> (when its epoch ends, trial)
        self.fresh: set[str] = set()  # must pay the start-up before its next epoch
        self.now = 0.0
        self.epochs = 0
        self.anytime: list[tuple[int, float]] = []
        limit = tuning.trial_limit(space, concurrency)
        algo = tuning.searcher(space, limit)
        self.scheduler: TrialScheduler = tuning.scheduler(space) or FIFOScheduler()
        if isinstance(algo, Searcher):
            if limit:
                algo = ConcurrencyLimiter(algo, max_concurrent=limit)
            algo = SearchGenerator(algo)
        self.search = algo
        config = tuning.param_space(space)
        self.search.set_search_properties(space.spec.metric, space.spec.mode, config)
        self.scheduler.set_search_properties(space.spec.metric, space.spec.mode)
        with tempfile.TemporaryDirectory() as folder:
            self.search.add_configurations([Experiment("simulated", run=_not_run, config=config, num_samples=space.num_trials, storage_path=folder)])
        self.controller = _Controller(self)

    # -- trial life cycle, as Tune's controller runs it

    def stop(self, trial: Trial) -> None:
        """Tune's ``stop_trial``: a waiting trial is removed from the scheduler, a running one completed in it."""
        if trial.is_finished():
            return
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self.controller, trial)
            self.search.on_trial_complete(trial.trial_id)
        else:
            self.scheduler.on_trial_complete(self.controller, trial, trial.last_result)
            self.search.on_trial_complete(trial.trial_id, result=trial.last_result)
        self._release(trial)
        trial.set_status(Trial.TERMINATED)
        self.ended[trial.trial_id] = "completed" if self.done.get(trial.trial_id, 0) >= self.space.epochs else "stopped"
        self._anytime()

    def pause(self, trial: Trial) -> None:
        self._release(trial)
        trial.set_status(Trial.PAUSED)
        self.fresh.add(trial.trial_id)

    def _release(self, trial: Trial) -> None:
        self.busy.pop(trial.trial_id, None)
        if trial in self.queue:
            self.queue.remove(trial)

    def _start(self, trial: Trial) -> None:
        trial.set_status(Trial.RUNNING)
        self.fresh.add(trial.trial_id)
        self.queue.append(trial)

    def _fill(self) -> None:
        """New trials from the searcher start at once (their drivers need no CPU); paused trials the scheduler
        clears start again; then waiting trials take the free slots, in the order they became ready."""
        while (trial := self.search.next_trial()) is not None:
            self.created[trial.trial_id] = len(self.trials)
            self.trials.append(trial)
            self.key[trial.trial_id] = self.curves.nearest(trial.config, self.space)
            self.scheduler.on_trial_add(self.controller, trial)
        for trial in self.trials:
            if trial.status == Trial.PENDING:
                self._start(trial)
        while (trial := self.scheduler.choose_trial_to_run(self.controller)) is not None and trial.status == Trial.PAUSED:
            self._start(trial)
        while self.queue and len(self.busy) < self.concurrency:
            trial = self.queue.pop(0)
            epoch = self.done.get(trial.trial_id, 0) + 1
            recorded = self.curves.configs[self.key[trial.trial_id]][trial.config["seed"]]
            cost = recorded.seconds[epoch] + (self.curves.start_s if trial.trial_id in self.fresh else 0.0)
            self.fresh.discard(trial.trial_id)
            self.busy[trial.trial_id] = (self.now + cost, trial)

    def run(self) -> Run:
        self._fill()
        while self.busy:
            # ties (duplicate configurations have equal times) go to the trial created first: Tune's ids are random
            trial_id = min(self.busy, key=lambda t: (self.busy[t][0], self.created[t]))
            self.now, trial = self.busy.pop(trial_id)
            self._report(trial)
            self._fill()
        stuck = [t.trial_id for t in self.trials if not t.is_finished()]
        if stuck:
            raise RuntimeError(f"simulation of {self.space.path} ended with trials still waiting: {', '.join(stuck)}")
        best = self.curves.true_best()
        return Run(
            reported=self.reported(),
            epochs=self.epochs,
            wall_s=self.now,
            anytime=self.anytime,
            true_best_stopped=any(self.key[t] == best and s == "stopped" for t, s in self.ended.items()),
            trials=[{"trial_id": t.trial_id, "params": self.curves.params(self.key[t.trial_id]), "seed": t.config["seed"],
                     "proposed": {n: t.config.get(n) for n in self.curves.names},
                     "status": self.ended[t.trial_id], "epochs": self.done.get(t.trial_id, 0)} for t in self.trials],
        )  # fmt: skip

    def _report(self, trial: Trial) -> None:
        epoch = self.done.get(trial.trial_id, 0) + 1
        recorded = self.curves.configs[self.key[trial.trial_id]][trial.config["seed"]]
        self.done[trial.trial_id] = epoch
        self.epochs += 1
        result = {"epoch": epoch, self.metric: recorded.values[epoch], "epoch_time_s": recorded.seconds[epoch],
                  "training_iteration": epoch, "trial_id": trial.trial_id, "done": epoch >= self.space.epochs}  # fmt: skip
        decision = self.scheduler.on_trial_result(self.controller, trial, result)
        if decision != TrialScheduler.STOP:
            self.search.on_trial_result(trial.trial_id, result)
        trial.update_last_result(result)
        if decision == TrialScheduler.STOP or epoch >= self.space.epochs:
            self.stop(trial)
        elif decision == TrialScheduler.PAUSE:
            self.pause(trial)
        else:
            self.queue.insert(0, trial)  # it keeps its slot: the next epoch follows at once

    def reported(self) -> tuple | None:
        """What the search would report as best now, by ``results table``'s rule (``best_configuration``): the best
        mean over seeds of the final values among configurations whose every trial completed."""
        finals: dict[tuple, dict[int, float]] = {}
        early: set[tuple] = set()
        for trial in self.trials:
            status = self.ended.get(trial.trial_id)
            if status is None or self.metric not in trial.last_result:  # running, or stopped before its first epoch
                continue
            key = self.key[trial.trial_id]
            finals.setdefault(key, {})[trial.config["seed"]] = trial.last_result[self.metric]
            if status != "completed":
                early.add(key)
        return best_configuration(finals, self.space.spec.mode, early)  # type: ignore[return-value]

    def _anytime(self) -> None:
        reported = self.reported()
        if reported is not None:
            self.anytime.append((self.epochs, self.curves.regret(reported)))


def _not_run(config: dict[str, Any]) -> None:
    """The trainable the simulated experiment names; never called."""
    raise RuntimeError("a simulated trial is never run")


def simulate(space: Space, curves: Curves, concurrency: int, sampler_seed: int = 0) -> Run:
    """One simulated search of ``space`` over ``curves``, ``concurrency`` trials computing at once; its searcher
    seeded with ``sampler_seed``."""
    curves.check(space)
    spec = space.spec.model_copy(update={"search": space.spec.search.model_copy(update={"seed": sampler_seed})})
    return _Simulation(dataclasses.replace(space, spec=spec), curves, concurrency).run()


@dataclass
class Summary:
    """One strategy over repeats: the numbers ``search simulate`` prints."""

    name: str
    runs: list[Run]
    grid_epochs: int
    curves: Curves

    @property
    def hit_rate(self) -> float:
        return statistics.fmean(r.reported is not None and self.curves.regret(r.reported) <= HIT_POINTS for r in self.runs)

    @property
    def regrets(self) -> list[float]:
        return [self.curves.regret(r.reported) if r.reported is not None else math.nan for r in self.runs]

    @property
    def epochs_share(self) -> float:
        return statistics.fmean(r.epochs for r in self.runs) / self.grid_epochs

    @property
    def wall_s(self) -> float:
        return statistics.fmean(r.wall_s for r in self.runs)

    @property
    def true_best_stopped(self) -> float:
        return statistics.fmean(r.true_best_stopped for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        regrets = self.regrets
        return {
            "hit_rate": self.hit_rate,
            "regret_mean": statistics.fmean(regrets),
            "regret_std": statistics.stdev(regrets) if len(regrets) > 1 else 0.0,
            "epochs_share": self.epochs_share,
            "epochs": statistics.fmean(r.epochs for r in self.runs),
            "wall_s": self.wall_s,
            "true_best_stopped": self.true_best_stopped,
            "repeats": len(self.runs),
        }


def repeat(name: str, space: Space, curves: Curves, repeats: int, concurrency: int, progress: bool = True) -> Summary:
    """``repeats`` simulated searches of ``space``, the searcher seeded 0, 1, …, ``repeats - 1``."""
    import optuna
    from tqdm import tqdm

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a study per repeat, each announced otherwise
    seeds = tqdm(range(repeats), desc=f"simulating {name}", unit="search", disable=not progress, leave=False)
    runs = [simulate(space, curves, concurrency, seed) for seed in seeds]
    return Summary(name, runs, len(curves.configs) * len(space.spec.seed_list) * space.epochs, curves)


def rungs(space: Space) -> list[int]:
    """The epochs at which the space's scheduler judges trials (none without one), read off its own ASHA bracket."""
    scheduler = tuning.scheduler(space)
    if scheduler is None:
        return []
    return sorted(int(m) for m, _ in scheduler._brackets[0]._rungs if m < space.max_t)


def table(summaries: Sequence[Summary]) -> str:
    """The per-strategy table: hit rate, regret, epochs spent, simulated wall time, true best stopped."""
    from results.report import format_rows

    rows = []
    for s in summaries:
        d = s.as_dict()
        rows.append([s.name, f"{100 * d['hit_rate']:.0f} %", f"{d['regret_mean']:.2f} ± {d['regret_std']:.2f}",
                     f"{100 * d['epochs_share']:.0f} %", f"{d['wall_s'] / 60:.1f}", f"{100 * d['true_best_stopped']:.0f} %"])  # fmt: skip
    columns = ["strategy", f"within {HIT_POINTS:g} pt of best", "regret (points)", "epochs of grid", "sim. minutes", "true best stopped"]
    return format_rows(columns, rows)


def spearman_table(curves: Curves, marked: Sequence[int]) -> str:
    """Per epoch, Spearman's rho between that epoch's and the final ranking; the scheduler's rungs marked."""
    from results.report import format_rows

    rows = [[r["rung"], f"{r['spearman']:.2f}", "rung" if r["rung"] in marked else ""] for r in curves.spearman()]
    return format_rows(["epoch", "spearman vs final", ""], rows)


def first_reliable(curves: Curves, threshold: float = 0.8) -> int | None:
    """The first epoch whose ranking of the configurations correlates with the final one at ``threshold``."""
    return next((r["rung"] for r in curves.spearman() if r["spearman"] >= threshold), None)


def report(summaries: Sequence[Summary], curves: Curves, space: Space) -> str:
    """What ``search simulate`` prints."""
    best = curves.true_best()
    params = ", ".join(f"{k}={v:g}" if _number(v) else f"{k}={v}" for k, v in curves.params(best).items())
    reliable = first_reliable(curves)
    lines = [
        f"curves {curves.source}: {len(curves.configs)} configurations x {len(curves.seeds)} seeds, {curves.epochs} epochs; "
        f"true best (mean over seeds of the final {curves.metric}): {params} = {curves.final(best):.2f}",
        "",
        table(summaries),
        "",
        spearman_table(curves, rungs(space)),
        f"first epoch whose ranking reaches Spearman 0.8 with the final one: {reliable if reliable is not None else 'none'}",
    ]
    return "\n".join(lines)


def as_json(summaries: Sequence[Summary], curves: Curves) -> dict[str, Any]:
    best = curves.true_best()
    return {
        "curves": curves.source,
        "true_best": {"configuration": list(best), "params": curves.params(best), "mean": curves.final(best)},
        "strategies": {s.name: s.as_dict() for s in summaries},
        "spearman": curves.spearman(),
    }


def write_json(summaries: Sequence[Summary], curves: Curves, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(as_json(summaries, curves), indent=2, default=str) + "\n")


def figure(summaries: Sequence[Summary], path: str | Path) -> Path:
    """Regret of the configuration each strategy would report against the epochs spent (share of the full
    grid), the anytime plot of the HPO literature: the mean over repeats as a line, the band between the
    repeats' quartiles, a dot where the strategy ends on average (its mean budget and final regret)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    grid_epochs = summaries[0].grid_epochs
    budget = np.linspace(0, max(max(r.epochs for r in s.runs) for s in summaries) / grid_epochs, 300)
    for s in summaries:
        curves = []
        for run in s.runs:
            spent = np.array([e for e, _ in run.anytime], dtype=float) / grid_epochs
            regret = np.array([r for _, r in run.anytime], dtype=float)
            index = np.searchsorted(spent, budget, side="right") - 1
            known = (index >= 0) & (budget <= run.epochs / grid_epochs)  # before a verdict, after the search: nothing
            curves.append(np.where(known, regret[np.clip(index, 0, None)], np.nan))
        stack = np.array(curves)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # budgets no repeat has a value for
            mean = np.nanmean(stack, axis=0)
            low, high = np.nanpercentile(stack, 25, axis=0), np.nanpercentile(stack, 75, axis=0)
        (line,) = ax.plot(budget, mean, label=s.name, linewidth=1.6)
        ax.fill_between(budget, low, high, color=line.get_color(), alpha=0.1, linewidth=0)
        d = s.as_dict()
        ax.plot([d["epochs_share"]], [d["regret_mean"]], "o", color=line.get_color(), markersize=6)
    ax.axhline(HIT_POINTS, color="0.5", linestyle=":", linewidth=1)
    ax.text(budget[-1], HIT_POINTS, f" {HIT_POINTS:g} point", va="bottom", ha="right", fontsize=8, color="0.4")
    ax.set_xlabel("epochs spent, share of the full grid's")
    ax.set_ylabel(f"regret of the reported best ({summaries[0].curves.metric} points)")
    store, _, search = summaries[0].curves.source.rpartition(":")
    ax.set_title(f"{Path(store).name}:{search}, {len(summaries[0].runs)} repeats: mean, quartile band, dot = where it ends", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
