"""Figures of a search, drawn from the store's tables (never from Tune's state): PNG files, matplotlib's Agg backend.

- ``ablation_<metric>.png``: the paper's kind of ablation figure, the final metric per configuration, mean ± std
  over seeds, each seed a dot, and the paper's number beside it where the space file's ``paper`` block gives one;
- ``curves_<metric>.png``: the metric (and the auxiliary model's top-1) per epoch of every trial, trials that
  ASHA stopped ending in a cross;
- ``pseudo_labels.png``: per epoch, the share of unlabeled clips whose pseudo-label passed the threshold and how
  many of those were right, for both models (the paper's Fig. S1 kind);
- ``stages.png``, for a pipeline method (TimeBalance): the loss per epoch of every stage result the search's trials
  built (its teachers), a panel per stage;
- for searches that sample (Optuna): ``params_<metric>.png``, the metric against each sampled parameter, and
  ``best_so_far_<metric>.png``, each trial's metric in start order with the best so far.

Every figure of trials draws the trials' own epochs only: a stage result's epoch rows belong to no trial.

``python -m results report`` embeds the same figures in its HTML page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # files only: never a window, works without a display
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from results.report import open_search, resolve, varied_columns  # noqa: E402
from results.stats import mean_std  # noqa: E402
from results.store import ORDER, Store  # noqa: E402
from results.tables import retrying  # noqa: E402

# The pseudo-label panels: (column, title).
PSEUDO_LABELS = (
    ("mask_rate_primary", "primary: share of unlabeled clips accepted"),
    ("mask_rate_aux", "auxiliary: share of unlabeled clips accepted"),
    ("pl_acc_primary", "primary's pseudo-labels: accuracy of the accepted"),
    ("pl_acc_aux", "auxiliary's pseudo-labels: accuracy of the accepted"),
)
SAMPLED = ("choice", "uniform", "loguniform", "int")
_STYLES = ("-", "--", ":", "-.")


@dataclass
class SearchData:
    """One search read from the store: its row, its trials (summaries derived from epochs), the trials' epochs and
    the epochs of the stage results they built."""

    search_id: str
    search: dict[str, Any]
    trials: list[dict[str, Any]]
    epochs: list[dict[str, Any]]  # the trials' own, in (trial, epoch) order
    params: list[str]  # the configuration columns that differ between trials, seed left out
    space: dict[str, Any] = field(default_factory=dict)  # the space file as it was run
    # A stage result's rows (``stage_key`` set, no trial id): stages in the order first written, then by seed, key, epoch.
    stage_epochs: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # every ``search run`` of it, oldest first (``runs``)

    @property
    def metric(self) -> str:
        return self.search.get("metric") or "top1"

    @property
    def mode(self) -> str:
        return self.search.get("mode") or "max"

    @property
    def sampled(self) -> dict[str, str]:
        """The parameters a sampler drew (name → kind): the searches that get the Optuna figures."""
        kinds = {name: next((k for k in SAMPLED if k in p), "") for name, p in (self.space.get("space") or {}).items()}
        return {name: kind for name, kind in kinds.items() if kind and name in self.params}

    def key(self, trial: dict[str, Any]) -> tuple:
        return tuple(trial.get(p) for p in self.params)

    def configurations(self) -> dict[tuple, list[dict[str, Any]]]:
        """Trials grouped by configuration, in the order of the configuration's values (seeds within, by seed)."""
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for trial in sorted(self.trials, key=lambda t: (_sortable(self.key(t)), t.get("seed") or 0)):
            groups.setdefault(self.key(trial), []).append(trial)
        return groups

    def label(self, key: tuple, short: bool = True) -> str:
        if not self.params:
            return "all trials"
        if short and len(self.params) == 1:
            return value_text(key[0])
        return ", ".join(f"{p}={value_text(v)}" for p, v in zip(self.params, key))

    def cells(self, metric: str) -> list["Cell"]:
        """Per configuration, the final ``metric`` of every trial that reported one: what tables and figures show."""
        out = []
        for key, trials in self.configurations().items():
            scored = [(v, t) for t in trials if (v := _final(t, metric)) is not None]
            out.append(Cell(key, trials, scored, *mean_std([v for v, _ in scored])))
        return out

    def curves(self, trial_id: str) -> list[dict[str, Any]]:
        """The trial's epoch rows in epoch order."""
        return self._by_trial.get(trial_id, [])

    @cached_property
    def _by_trial(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in self.epochs:  # read in (trial, epoch) order
            grouped.setdefault(row["trial_id"], []).append(row)
        return grouped


@dataclass(frozen=True)
class Cell:
    """One configuration's trials and their final values (with the trial each came from)."""

    key: tuple
    trials: list[dict[str, Any]]
    scored: list[tuple[float, dict[str, Any]]]
    mean: float  # NaN without values
    std: float  # sample std; NaN with fewer than two values

    @property
    def unfinished(self) -> int:
        return sum(t.get("status") != "completed" for t in self.trials)


def load(store: Store, search: str) -> SearchData:
    """Read a search (an id, or the latest search of a name) from the store."""
    search_id = resolve(store, search)

    def run() -> SearchData:
        con = open_search(store, search_id)
        [row] = con.sql("SELECT * FROM searches").to_arrow_table().to_pylist()
        trials = con.sql("SELECT * FROM trials ORDER BY started_at, trial_id").to_arrow_table().to_pylist()
        own = "trial_id IN (SELECT trial_id FROM trials)"  # what the trials' summaries count, too
        epochs = con.sql(f"SELECT * FROM epochs WHERE {own} ORDER BY trial_id, epoch").to_arrow_table().to_pylist()
        stage_epochs = con.sql(
            f"SELECT * EXCLUDE ({ORDER}) FROM _epochs WHERE stage_key IS NOT NULL "
            f"ORDER BY min({ORDER}) OVER (PARTITION BY stage), stage, seed, stage_key, epoch"
        ).to_arrow_table().to_pylist()
        params = [c for c in varied_columns(con) if c != "seed"]
        space = yaml.safe_load(row.get("space_yaml") or "") or {}
        runs = con.sql("SELECT * FROM runs ORDER BY run_id").to_arrow_table().to_pylist()
        return SearchData(search_id, row, trials, epochs, params, space if isinstance(space, dict) else {}, stage_epochs, runs)

    return retrying(run)


@dataclass(frozen=True)
class Drawn:
    """A figure written to ``path``, with the sentence that says what it shows (the report's caption)."""

    path: Path
    caption: str


def plot(data: SearchData, out: str | Path, metric: str | None = None) -> list[Drawn]:
    """Write every figure that applies to this search into ``out``; return them with their captions."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metric = metric or data.metric
    drawn = []
    makers: list[Callable[[SearchData, str], tuple[Figure, str, str] | None]] = [ablation, curves, pseudo_labels, stages]
    if data.sampled:
        makers += [params, best_so_far]
    for make in makers:
        made = make(data, metric)
        if made is None:
            continue
        fig, name, caption = made
        path = out / name
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
        plt.close(fig)
        tmp.replace(path)  # a reader never sees half a figure
        drawn.append(Drawn(path, caption))
    return drawn


def _final(trial: dict[str, Any], metric: str) -> float | None:
    value = trial.get(f"final_{metric}")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def paper_values(data: SearchData, metric: str) -> dict[tuple, float]:
    """The space file's paper numbers for ``metric``, per configuration: an entry names a subset of the keys and
    applies to every configuration whose trials have those values."""
    paper = data.space.get("paper") or {}
    if paper.get("metric", "top1") != metric:
        return {}
    found = {}
    for key, trials in data.configurations().items():
        for entry in paper.get("values") or []:
            wanted = {k: v for k, v in entry.items() if k != "value"}
            if all(same_value(trials[0].get(k), v) for k, v in wanted.items()):
                found[key] = float(entry["value"])
    return found


def ablation(data: SearchData, metric: str) -> tuple[Figure, str, str] | None:
    cells = [c for c in data.cells(metric) if c.scored]
    if not cells or data.sampled:  # a sampler's configurations are each one point: see params_<metric>.png
        return None
    paper = paper_values(data, metric)
    source = (data.space.get("paper") or {}).get("source", "")
    keys = [c.key for c in cells]
    numeric = len(data.params) == 1 and all(_number(k[0]) for k in keys)
    fig, ax = plt.subplots(figsize=(max(6.0, (0.9 if numeric else 1.4) * len(keys) + 3), 4.5))
    xs = [float(k[0]) for k in keys] if numeric else list(range(len(keys)))
    width = 0.38 if paper else 0.6
    offset = width / 2 if paper and not numeric else 0.0  # our bar left of the paper's
    means = [c.mean for c in cells]
    stds = [0.0 if math.isnan(c.std) else c.std for c in cells]
    for x, cell in zip(xs, cells):
        for v, t in cell.scored:  # each seed, a cross where the trial did not complete (ASHA, an error)
            done = t.get("status") == "completed"
            ax.plot([x - offset], [v], "o" if done else "x", color="0.25", ms=4, alpha=0.8, zorder=3)
    seeds = max(len(c.scored) for c in cells)
    ours = f"ours: mean ± std over {seeds} seed{'s' if seeds > 1 else ''} ({data.search.get('name')})"
    if numeric:
        ax.errorbar(xs, means, yerr=stds, fmt="-o", color="C0", capsize=4, label=ours, zorder=2)
        if paper:
            px = [x for x, k in zip(xs, keys) if k in paper]
            ax.plot(px, [paper[k] for k in keys if k in paper], "*", color="C3", ms=14, label=f"paper: {source}", zorder=4)
        ax.set_xlabel(data.params[0])
    else:
        ax.bar([x - offset for x in xs], means, width, yerr=stds, capsize=4, color="C0", alpha=0.75, label=ours)
        if paper:
            px = [x + offset for x, k in zip(xs, keys) if k in paper]
            ax.bar(px, [paper[k] for k in keys if k in paper], width, color="none", edgecolor="C3", hatch="//", label=f"paper: {source}")
        ax.set_xticks(xs, ["\n".join(value_text(v) for v in k) or "all trials" for k in keys], fontsize=8)
        ax.set_xlabel(" / ".join(data.params))
    ax.set_ylabel(f"final {metric}")
    ax.set_title(f"{data.search.get('name')}: final {metric} per configuration", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    caption = (
        f"Final {metric} of each configuration: mean ± sample std over seeds (bars or line), every seed's trial a dot "
        f"(a cross if it did not complete)" + (f"; the paper's value ({source}) beside it" if paper else "") + "."
    )
    return fig, f"ablation_{metric}.png", caption


def _trial_styles(data: SearchData) -> dict[str, tuple[str, str]]:
    """Each trial's colour (its configuration) and line style (its seed's place among the seeds)."""
    seeds = sorted({t.get("seed") or 0 for t in data.trials})
    colours = {key: f"C{i % 10}" for i, key in enumerate(data.configurations())}
    return {t["trial_id"]: (colours[data.key(t)], _STYLES[seeds.index(t.get("seed") or 0) % len(_STYLES)]) for t in data.trials}


def _per_epoch(data: SearchData, panels: list[tuple[str, str]], title: str) -> Figure:
    """One panel per column: a line per trial over epochs, its end marked by how the trial ended."""
    styles = _trial_styles(data)
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.6 * rows), squeeze=False, sharex=True)
    for ax, (column, name) in zip(axes.flat, panels):
        for trial in data.trials:
            trial_epochs = data.curves(trial["trial_id"])
            if not any(_real(e.get(column)) for e in trial_epochs):
                continue
            # NaN (no pseudo-label passed, so no accuracy) leaves a gap; a lone value still shows as a point
            values = [e[column] if _real(e.get(column)) else math.nan for e in trial_epochs]
            colour, style = styles[trial["trial_id"]]
            ax.plot([e["epoch"] for e in trial_epochs], values, style, marker=".", ms=5, color=colour, lw=1.4, alpha=0.9)
            if _real(values[-1]):  # how the trial ended, at its last epoch
                end = {"completed": "o", "stopped": "X"}.get(trial.get("status"), "s")
                ax.plot(trial_epochs[-1]["epoch"], values[-1], end, color=colour, ms=7 if end == "X" else 4, mec="black" if end == "X" else colour)
        ax.set_title(name, fontsize=9)
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [Line2D([], [], color=f"C{i % 10}", lw=2, label=data.label(k)) for i, k in enumerate(data.configurations())][:12]
    handles += [
        Line2D([], [], ls="", marker="o", color="0.3", label="completed"),
        Line2D([], [], ls="", marker="X", color="0.3", mec="black", ms=8, label="stopped by ASHA"),
        Line2D([], [], ls="", marker="s", color="0.3", label="errored / running"),
    ]
    seeds = sorted({t.get("seed") or 0 for t in data.trials})
    handles += [Line2D([], [], color="0.3", ls=_STYLES[i % len(_STYLES)], label=f"seed {s}") for i, s in enumerate(seeds[:4])]
    legend_title = ", ".join(data.params) if data.params else None
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title=legend_title, title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def curves(data: SearchData, metric: str) -> tuple[Figure, str, str] | None:
    columns = [metric] + (["aux_top1"] if metric == "top1" else [])
    panels = [(c, f"{c} (test)" if "top" in c else c) for c in columns if any(_real(e.get(c)) for e in data.epochs)]
    if not panels:
        return None
    fig = _per_epoch(data, panels, f"{data.search.get('name')}: learning curves")
    caption = (
        f"{' and '.join(c for c, _ in panels)} after every epoch of every trial: colour = configuration, line style = "
        "seed; a cross ends a trial that ASHA stopped, a dot one that completed."
    )
    return fig, f"curves_{metric}.png", caption


def pseudo_labels(data: SearchData, metric: str) -> tuple[Figure, str, str] | None:
    panels = [(c, name) for c, name in PSEUDO_LABELS if any(_real(e.get(c)) for e in data.epochs)]
    if not panels:
        return None  # supervised only: no pseudo-labels
    fig = _per_epoch(data, panels, f"{data.search.get('name')}: pseudo-label quality per epoch")
    caption = (
        "Per epoch and trial, each model's pseudo-labels on the unlabeled clips: the share whose confidence passed "
        "the threshold (mask rate) and the accuracy of those accepted, against the clips' true labels."
    )
    return fig, "pseudo_labels.png", caption


def stages(data: SearchData, metric: str) -> tuple[Figure, str, str] | None:
    """The training loss of every stage result the search built, whichever trial built it: the teachers that every
    student of the same seed (and split) then started from."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}  # stage → stage key → its epochs
    for row in data.stage_epochs:
        results.setdefault(row["stage"], {}).setdefault(row["stage_key"], []).append(row)
    if not results:
        return None
    seeds = sorted({row.get("seed") or 0 for row in data.stage_epochs})
    fig, axes = plt.subplots(1, len(results), figsize=(5.0 * len(results), 3.8), squeeze=False)
    for ax, (stage, by_key) in zip(axes.flat, results.items()):
        for i, (key, rows) in enumerate(by_key.items()):
            seed = rows[0].get("seed") or 0
            label = f"{key[:8]} seed {seed}" + _tested(rows[-1])
            losses = [r["loss"] if _real(r.get("loss")) else math.nan for r in rows]
            ax.plot([r["epoch"] for r in rows], losses, _STYLES[i % len(_STYLES)], marker=".", ms=5,
                    color=f"C{seeds.index(seed) % 10}", lw=1.4, label=label)  # fmt: skip
        ax.set_title(stage, fontsize=9)
        ax.set_ylabel("loss")
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{data.search.get('name')}: stage results built by this search", fontsize=10)
    fig.tight_layout()
    caption = (
        "Training loss per epoch of every stage result a trial of this search built (a trial that found one built "
        "adds no curve): a panel per stage, a line per result, labelled with the first 8 characters of its key and "
        "its seed, colour = seed; where a stage's last epoch was tested, the label gives its top1 and aux_top1."
    )
    return fig, "stages.png", caption


def _epoch_axis(ax: Any) -> None:
    """Whole epochs on the x axis; a panel of one epoch (a toy run) gets that one tick, not fractions around it."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    low, high = ax.dataLim.intervalx
    if low == high:
        ax.set_xticks([low])


def _tested(last: dict[str, Any]) -> str:
    """A stage result's test accuracies where its last epoch has them (TimeBalance's fine-tuned teachers), for its
    legend label."""
    tested = [f"{m} {last[m]:.1f}" for m in ("top1", "aux_top1") if _real(last.get(m))]
    return f" ({', '.join(tested)})" if tested else ""


def params(data: SearchData, metric: str) -> tuple[Figure, str, str] | None:
    sampled = data.sampled
    points = [t for t in data.trials if _final(t, metric) is not None]
    if not points:
        return None
    fig, axes = plt.subplots(1, len(sampled), figsize=(3.6 * len(sampled), 3.6), squeeze=False, sharey=True)
    for ax, (name, kind) in zip(axes.flat, sampled.items()):
        if kind == "choice":
            choices = sorted({value_text(t.get(name)) for t in points}, key=_sortable)
            xs = [choices.index(value_text(t.get(name))) for t in points]
            ax.set_xticks(range(len(choices)), choices)
        else:
            xs = [t.get(name) for t in points]
            if kind == "loguniform":
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
        for x, t in zip(xs, points):
            done = t.get("status") == "completed"
            ax.plot([x], [_final(t, metric)], "o", color="C0" if done else "none", mec="C0", ms=6)
        ax.set_xlabel(f"{name} ({kind})")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel(f"final {metric}")
    fig.legend(
        handles=[Line2D([], [], ls="", marker="o", color="C0", label="completed"),
                 Line2D([], [], ls="", marker="o", color="none", mec="C0", label="stopped early (its last epoch)")],
        loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8,
    )  # fmt: skip
    fig.suptitle(f"{data.search.get('name')}: final {metric} against each sampled parameter", fontsize=10)
    fig.tight_layout()
    caption = f"Each trial's final {metric} against each parameter the sampler drew; hollow: stopped before the last epoch."
    return fig, f"params_{metric}.png", caption


def best_so_far(data: SearchData, metric: str) -> tuple[Figure, str, str] | None:
    points = [(i + 1, _final(t, metric), t) for i, t in enumerate(data.trials) if _final(t, metric) is not None]
    if not points:
        return None
    better = max if data.mode == "max" else min
    best, running = [], None
    for _, value, _ in points:
        running = value if running is None else better(running, value)
        best.append(running)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for n, value, t in points:
        done = t.get("status") == "completed"
        ax.plot([n], [value], "o", color="C0" if done else "none", mec="C0", ms=6)
    ax.step([n for n, _, _ in points], best, where="post", color="C3", label=f"best so far ({data.mode})")
    ax.set_xlabel("trial, in the order it started")
    ax.set_ylabel(f"final {metric}")
    ax.set_title(f"{data.search.get('name')}: search progress", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    caption = f"Each trial's final {metric} in the order trials started (hollow: stopped early), and the best so far."
    return fig, f"best_so_far_{metric}.png", caption


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same_value(ours: Any, theirs: Any) -> bool:
    if _number(ours) and _number(theirs):
        return math.isclose(float(ours), float(theirs), rel_tol=1e-9, abs_tol=1e-12)
    return ours == theirs


def value_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _sortable(key: Any) -> tuple:
    """Configurations in the order of their values: numbers by size, anything else by its text."""
    items = key if isinstance(key, tuple) else (key,)
    return tuple((0, float(v), "") if _number(v) else (1, 0.0, str(v)) for v in items)
