"""Search spaces: the YAML schema, its validation, and what a space expands to.

A space file is validated completely before Ray starts: the file's own keys by the schema below, the
base config and every value a parameter can take by ``TrainConfig``. Every problem is reported with the
file, the key path and what is allowed.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainable import catalog
from trainable.config import RENAMED_VALUES, ConfigError, TrainConfig, format_errors, refuse_booleans, renamed
from trainable.metrics import METRICS

KINDS = ("choice", "grid", "uniform", "loguniform", "int")


class SpaceError(ValueError):
    """A space file or override that is not valid; the message names the file and the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans(cls, values: Any) -> Any:
        return refuse_booleans(cls, values)


class Param(_Strict):
    """One varied parameter: exactly one of the kinds below."""

    choice: list[Any] | None = Field(None, min_length=1, description="sampled uniformly from the list")
    grid: list[Any] | None = Field(None, min_length=1, description="every value, each in its own trials")
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int", description="an integer in [low, high], both included")

    @model_validator(mode="after")
    def _one_kind(self) -> "Param":
        given = [k for k in KINDS if getattr(self, "int_" if k == "int" else k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)}; got {', '.join(given) or 'none'}")
        low_high = self.uniform or self.loguniform or self.int_
        if low_high is not None and not all(math.isfinite(v) for v in low_high):
            raise ValueError(f"{given[0]}: bounds must be finite numbers, got {list(low_high)}")
        if low_high is not None and not low_high[0] < low_high[1]:
            raise ValueError(f"{given[0]}: low must be below high, got {list(low_high)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: bounds must be positive, got {list(self.loguniform)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, "int_" if k == "int" else k) is not None)

    @property
    def values(self) -> Any:
        return getattr(self, "int_" if self.kind == "int" else self.kind)

    def examples(self) -> list[Any]:
        """Values to validate against the training config: all listed ones, or the bounds."""
        return list(self.values)


class Scheduler(_Strict):
    """How trials are stopped early (``search.schedulers``): ``asha`` decides on each report as it arrives;
    ``halving`` (synchronous successive halving) decides a rung once every configuration has reached it, so the
    same space prints the same table on every run; ``none`` runs every trial to its last epoch."""

    type: Literal["asha", "halving", "none"] = "none"
    max_t: int | None = Field(None, ge=1, description="the last epoch a rung can be at; default: the base config's epochs")
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1.0)
    seeds: Literal["apart", "together"] | None = Field(
        None,
        description="asha: judge each seed's trial alone (apart, the default), or a configuration by its mean over its "
        "seeds and stop or continue it as a whole (together); halving is always together",
    )

    @model_validator(mode="after")
    def _check(self) -> "Scheduler":
        if self.type == "none" and (self.max_t is not None or self.seeds is not None):
            raise ValueError("max_t and seeds: only for type 'asha' or 'halving'")
        if self.type == "halving" and self.seeds == "apart":
            raise ValueError("seeds: halving compares configurations by their mean over seeds; 'apart' is for asha")
        return self

    @property
    def grouped(self) -> bool:
        """Whether rungs compare configurations (their mean over seeds) rather than single trials."""
        return self.type == "halving" or (self.type == "asha" and self.seeds == "together")


class Search(_Strict):
    type: Literal["optuna", "grid"] = "grid"
    seed: int = Field(0, description="seed of Optuna's TPE sampler")
    startup_trials: int = Field(10, ge=0, description="random configurations before TPE takes over")


class Resources(_Strict):
    workers: int = Field(1, ge=1, description="Ray Train workers per trial")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="fractional values share a GPU between workers")


class Paper(_Strict):
    """The paper's numbers for this space, which ``results plot`` and ``results report`` draw beside ours."""

    source: str = Field(min_length=1, description="where they come from: table or figure, dataset, labeled fraction")
    metric: str = "top1"
    values: list[dict[str, Any]] = Field(
        min_length=1, description="each: the varied keys that pick a configuration (a subset), and its 'value'"
    )

    @model_validator(mode="after")
    def _check(self) -> "Paper":
        if self.metric not in METRICS:
            raise ValueError(f"metric: {self.metric!r} is not a reported metric; allowed: {', '.join(METRICS)}")
        for i, entry in enumerate(self.values):
            value = entry.get("value")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"values[{i}]: needs a numeric 'value' (the paper's number), got {value!r}")
        return self


class SpaceFile(_Strict):
    """The YAML file's top level."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    metric: str = "top1"
    mode: Literal["max", "min"] = "max"
    base: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param] = Field(default_factory=dict)
    cells: list[dict[str, Any]] = Field(
        default_factory=list,
        description="explicit grid cells, each setting several keys at once (a row of a paper table)",
    )
    seeds: list[int] | int = Field([0], description="a list of seeds, or a count n meaning 0..n-1")
    scheduler: Scheduler = Field(default_factory=Scheduler)
    search: Search = Field(default_factory=Search)
    num_samples: int = Field(1, ge=1, description="optuna: configurations to try; grid: repeats of the grid")
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(0, ge=0, description="retries of a failed trial, resuming from its checkpoint")
    paper: Paper | None = None

    @model_validator(mode="after")
    def _check(self) -> "SpaceFile":
        if self.metric not in METRICS:
            raise ValueError(f"metric: {self.metric!r} is not a reported metric; allowed: {', '.join(METRICS)}")
        if isinstance(self.seeds, int) and self.seeds < 1:
            raise ValueError(f"seeds: a count must be >= 1, got {self.seeds}")
        if isinstance(self.seeds, list) and not self.seeds:
            raise ValueError("seeds: give at least one seed, or a count")
        if isinstance(self.seeds, list) and any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds: seeds must be >= 0 (they seed numpy and torch), got {self.seeds}")
        if isinstance(self.seeds, list) and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: repeated seeds {self.seeds}")
        grid = [name for name, p in self.space.items() if p.kind == "grid"]
        if self.search.type == "optuna" and grid:
            raise ValueError(f"space: grid parameters ({', '.join(grid)}) need search type 'grid'; use choice with optuna")
        if self.search.type == "optuna" and self.cells:
            raise ValueError("cells: need search type 'grid'")
        for i, cell in enumerate(self.cells):
            clash = sorted(set(cell) & set(self.space))
            if clash:
                raise ValueError(f"cells[{i}]: {', '.join(clash)} also varied in space; set each key in one place")
        if self.search.type == "grid" and self.num_samples > 1 and not any(p.kind != "grid" for p in self.space.values()):
            raise ValueError("num_samples: a pure grid runs every cell once per seed; add seeds instead")
        varied = set(self.space).union(*self.cells)
        for i, entry in enumerate(self.paper.values if self.paper else []):
            unknown = sorted(set(entry) - varied - {"value"})
            if unknown:
                allowed = ", ".join(sorted(varied)) or "none: nothing is varied"
                raise ValueError(f"paper.values[{i}]: {', '.join(unknown)} not varied by this space; allowed: {allowed}")
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class Space:
    """A validated space: the file's settings plus the base config with overrides applied."""

    path: str
    text: str
    spec: SpaceFile
    base: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    # Keys the file sets that ``--set scale=tiny`` fills in instead (``preset_keys``), left out of every cell.
    dropped: frozenset[str] = frozenset()
    # The renamed keys and values the file or the overrides used, each a line saying the new name.
    renames: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    @property
    def epochs(self) -> int:
        return int(self.base.get("epochs", TrainConfig.model_fields["epochs"].default))

    @property
    def max_t(self) -> int:
        return self.spec.scheduler.max_t or self.epochs

    def grid_cells(self) -> list[dict[str, Any]]:
        """Every explicit cell crossed with every combination of the grid parameters (one empty cell if none).

        Every cell sets every key that any cell sets, the base config's value where the file's cell is silent:
        Tune declares such a key as a choice (``search.tune.param_space``) and would draw it at random for a
        point that lacks it (``beta`` of a ``cmpl`` row, when other rows set ``beta``). A ``--set`` override
        replaces the key in every cell too: ``--set epochs=3`` makes every trial of a toy run 3 epochs long.
        """
        grid = {k: p.values for k, p in self.spec.space.items() if p.kind == "grid"}
        combos = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
        cells = [{k: v for k, v in cell.items() if k not in self.dropped} for cell in self.spec.cells] or [{}]
        shared = {k: self.base.get(k, TrainConfig.model_fields[k].default) for k in set().union(*cells)}
        forced = {k: v for k, v in self.overrides.items() if k in shared}
        return [{**shared, **cell, **forced, **combo} for cell in cells for combo in combos]

    def grid_points(self) -> list[dict[str, Any]]:
        """A grid search's trials: every cell on every seed, ``num_samples`` times (other keys are sampled)."""
        return [
            {**cell, "seed": seed}
            for _ in range(self.spec.num_samples)
            for cell in self.grid_cells()
            for seed in self.spec.seed_list
        ]

    @property
    def num_trials(self) -> int:
        if self.spec.search.type == "grid":
            return len(self.grid_points())
        return self.spec.num_samples * len(self.spec.seed_list)


def preset_keys(overrides: dict[str, Any]) -> frozenset[str]:
    """The keys a ``--set scale=tiny`` fills in (``TrainConfig.tiny_fills``) that no other ``--set`` gives: a
    preset given on the command line replaces what the file sets for them, as any ``--set`` replaces its key, so a
    paper space runs at toy scale with one override. (Within one config an explicit key wins over the scale.)"""
    if overrides.get("scale") != "tiny":
        return frozenset()
    return frozenset(TrainConfig.tiny_fills(overrides)) - set(overrides)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings, values read as YAML scalars (``0.5`` a float, ``true`` a bool, ``null`` None)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpaceError(f"--set takes key=value, got {pair!r}")
        if not value.strip():
            raise SpaceError(f"--set {key.strip()}=: no value; give one (null for the default's 'none')")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SpaceError(f"--set {pair}: the value is not a YAML scalar") from None
    return out


def load(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    resources: dict[str, Any] | None = None,
) -> Space:
    """Read and validate a space file; raise ``SpaceError`` naming the file and every bad key.

    ``overrides`` replace base-config values, ``seeds`` the file's seeds and ``resources`` keys of its
    resources (e.g. one seed on one CPU worker for a toy run of a GPU space).
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpaceError(f"{source}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpaceError(f"{source}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpaceError(f"{source}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: the top level must be a mapping with at least 'name'")
    raw, overrides, renames = _today(source, raw, dict(overrides or {}))
    if seeds is not None:
        raw = {**raw, "seeds": seeds}
    if resources:
        raw = {**raw, "resources": {**(raw.get("resources") or {}), **resources}}
    try:
        spec = SpaceFile.model_validate(raw)
    except ValidationError as exc:
        raise SpaceError(format_errors(exc, source, SpaceFile)) from None

    dropped = preset_keys(overrides)
    base = {**{k: v for k, v in spec.base.items() if k not in dropped}, **overrides}
    problems = _check_config(base, source, "base")
    allowed = [k for k in TrainConfig.model_fields if k != "seed"]
    for name, param in spec.space.items():
        if name not in allowed:
            hint = "; seeds are set by the top-level 'seeds'" if name == "seed" else ""
            problems.append(f"{source}: space.{name}: unknown parameter{hint}; allowed: {', '.join(allowed)}")
            continue
        if name in overrides:
            problems.append(f"{source}: space.{name}: varied by the space, so it cannot be overridden with --set")
            continue
        for i, value in enumerate(param.examples()):
            problems += _check_config({**base, name: value}, source, f"space.{name}.{param.kind}[{i}]", only=name)
    for i, cell in enumerate(spec.cells):
        unknown = [k for k in cell if k not in allowed]
        if unknown:
            problems.append(f"{source}: cells[{i}]: unknown keys {', '.join(unknown)}; allowed: {', '.join(allowed)}")
            continue
        cell = {k: v for k, v in cell.items() if k not in dropped}
        problems += _check_config({**base, **cell, **overrides}, source, f"cells[{i}]")
    if problems:
        raise SpaceError("\n".join(dict.fromkeys(problems)))
    space = Space(path=source, text=text, spec=spec, base=base, overrides=overrides, dropped=dropped, renames=renames)
    if spec.scheduler.type != "none" and space.max_t > space.epochs:
        raise SpaceError(f"{source}: scheduler.max_t: must be <= epochs ({space.epochs}), got {space.max_t}")
    if spec.scheduler.type != "none" and spec.scheduler.grace_period > space.max_t:
        raise SpaceError(
            f"{source}: scheduler.grace_period: must be <= the last epoch a rung can be at "
            f"(max_t, default epochs: {space.max_t}), got {spec.scheduler.grace_period}"
        )
    return space


def _today(source: str, raw: dict[str, Any], overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    """The file's config keys and values (base, space, cells, paper values) and the overrides under today's names
    (``trainable.config.renamed``), and a line for each old one: a space written before a rename runs as it did,
    and ``search check`` says what to rename. A key given under both names is refused."""
    notes: list[str] = []

    def under(where: str, values: Any) -> Any:
        if not isinstance(values, dict):
            return values  # the schema says what is wrong with it
        try:
            new, said = renamed(values)
        except ValueError as exc:
            raise SpaceError(f"{source}: {where}{exc}") from None
        notes.extend(f"{source}: {where}{line}" for line in said)
        return new

    raw = dict(raw)
    for section in ("base", "space"):
        if section in raw:
            raw[section] = under(f"{section}.", raw[section])
    if isinstance(raw.get("space"), dict):  # a varied key's renamed values, e.g. batchnorm: {grid: [split, joint]}
        for key in RENAMED_VALUES:
            param = raw["space"].get(key)
            if isinstance(param, dict):
                raw["space"][key] = {kind: [under("space.", {key: v})[key] for v in vs]
                                     if isinstance(vs, list) else vs for kind, vs in param.items()}  # fmt: skip
    if isinstance(raw.get("cells"), list):
        raw["cells"] = [under(f"cells[{i}].", cell) for i, cell in enumerate(raw["cells"])]
    paper = raw.get("paper")
    if isinstance(paper, dict) and isinstance(paper.get("values"), list):
        raw["paper"] = {**paper, "values": [under(f"paper.values[{i}].", v) for i, v in enumerate(paper["values"])]}
    overrides = under("--set ", overrides)
    return raw, overrides, tuple(dict.fromkeys(notes))


def _check_config(values: dict[str, Any], source: str, where: str, only: str | None = None) -> list[str]:
    """Problems of ``values`` as a training config, reported at ``where``; ``only`` keeps one key's problems."""
    try:
        TrainConfig.parse(values, source=source)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        if only is not None:
            lines = [line for line in lines if line.startswith(f"{source}: {only}:")]
            return [line.replace(f"{source}: {only}:", f"{source}: {where}:", 1) for line in lines]
        return [line.replace(f"{source}: ", f"{source}: {where}.", 1) for line in lines]
    return []


def describe(space: Space) -> str:
    """What ``search check`` prints: parameters, trial count, scheduler, search and resources."""
    spec = space.spec
    lines = [f"space {spec.name} ({space.path}, hash {space.hash})"]
    if spec.description:
        lines.append(f"  {spec.description.strip()}")
    if space.overrides:
        lines.append("  overrides: " + ", ".join(f"{k}={v!r}" for k, v in space.overrides.items()))
    config = TrainConfig.parse({**space.base, "seed": spec.seed_list[0]})
    lines.append(f"  method {config.method}: {config.primary_backbone}" + (f" + {config.aux_backbone}" if config.aux_backbone else ""))
    lines.append(f"  dataset {config.dataset}, {config.labeled_per_class} labeled per class, {config.epochs} epochs")
    stages = catalog.METHODS[config.method].stages
    if stages:
        lines.append(f"  stages: {' → '.join(stages)}; all but the last are shared under the store by what they "
                     f"depend on (pretraining {config.pretrain_epochs} epochs, fine-tuning {config.finetune_epochs})")  # fmt: skip
    lines.append("  parameters:" if spec.space or spec.cells else "  parameters: none (one configuration)")
    for name, param in spec.space.items():
        lines.append(f"    {name}: {param.kind} {list(param.values)}")
    for i, cell in enumerate(spec.cells):
        lines.append(f"    cell {i}: " + ", ".join(f"{k}={v}" for k, v in cell.items()))
    lines.append(f"  seeds: {spec.seed_list}")
    lines.append(f"  trials: {space.num_trials}")
    sch = spec.scheduler
    if sch.type != "none":
        kind = "synchronous successive halving" if sch.type == "halving" else "ASHA"
        judged = "each configuration by its mean over seeds" if sch.grouped else "each trial alone"
        lines.append(
            f"  scheduler: {kind} on {spec.metric} ({spec.mode}) by epoch, {judged}, grace {sch.grace_period}, "
            f"max_t {space.max_t}, reduction {sch.reduction_factor:g}"
        )
    else:
        lines.append("  scheduler: none (every trial runs all epochs)")
    if spec.search.type == "optuna":
        lines.append(f"  search: Optuna TPE on {spec.metric} ({spec.mode}), sampler seed {spec.search.seed}, {spec.search.startup_trials} startup trials")
    else:
        lines.append("  search: grid")
    res = spec.resources
    lines.append(
        f"  resources per trial: {res.workers} worker(s) x {res.cpus_per_worker:g} CPU"
        + (f" + {res.gpus_per_worker:g} GPU" if res.gpus_per_worker else "")
        + f"; at most {spec.max_concurrent or 'unlimited'} concurrent; {spec.max_failures} retries"
    )
    if spec.search.type == "grid":
        lines.append(f"  grid cells: {len(space.grid_cells())}")
    lines += [f"  warning: {w}" for w in warnings(space)]
    return "\n".join(lines)


def warnings(space: Space) -> list[str]:
    """Settings that run but make the scheduler's decisions unreliable, each naming its keys; and renamed keys.

    - A grace period inside the ramp of the unlabeled terms (``unsup_warmup_epochs``): the first rung then
      ranks what is mostly supervised training, before the pseudo-labels and the contrastive term act.
    - One seed under a scheduler: each rung ranks a single run, and at this field's label counts the seed
      noise is larger than most effects a search ranks.
    """
    spec = space.spec
    out = list(space.renames)
    if spec.scheduler.type == "none":
        return out
    ramps = [float(space.base.get("unsup_warmup_epochs", TrainConfig.model_fields["unsup_warmup_epochs"].default))]
    if "unsup_warmup_epochs" in spec.space:
        ramps += [float(v) for v in spec.space["unsup_warmup_epochs"].examples()]
    ramps += [float(cell["unsup_warmup_epochs"]) for cell in space.grid_cells() if "unsup_warmup_epochs" in cell]
    ramp = max(ramps)
    if ramp > 0 and spec.scheduler.grace_period <= ramp:
        out.append(
            f"{space.path}: scheduler.grace_period ({spec.scheduler.grace_period}) is within base.unsup_warmup_epochs "
            f"({ramp:g}), the ramp of gamma and beta: the first rung ranks mostly supervised training; "
            f"a grace period above {ramp:g} judges the semi-supervised phase"
        )
    if len(spec.seed_list) == 1:
        out.append(
            f"{space.path}: seeds: 1 with scheduler.type {spec.scheduler.type}: every rung ranks a single run's seed "
            "noise; use 3 or more seeds with scheduler.seeds: together"
        )
    return out
