"""``python -m results report``: one self-contained HTML page per search, for a person to read or send on.

Everything is inside the file (styles, the figures as PNG data URIs): it opens from a mail attachment or an
archive without the store or a network. It says where the numbers come from (space file, overrides, commit,
versions), the mean ± std table with each mean's 95 % interval and the verdict against the best configuration
(``results.stats.verdicts``), paired-by-seed differences to a baseline configuration, what each configuration
cost, a sampled search's parameter importances (``results.importance``), the figures of ``results.plot``,
and every trial (with the stage results it built or reused, for a pipeline method).
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
import uuid
from pathlib import Path
from typing import Any, Sequence

import yaml

from results.importance import EVALUATOR, importances
from results.plot import Cell, SearchData, paper_values, plot, same_value, value_text
from results.report import direction
from results.stats import best_index, interval_text, mean_ci, p_text, paired_difference, verdict_cells, verdicts
from results.tables import STAGE_COLUMNS

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { font-weight: bold; background: #eef6ee; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; max-width: 900px; }
.muted { color: #777; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


class BaselineError(KeyError):
    """A ``--baseline`` that does not pick exactly one configuration of the search."""


def parse_baseline(text: str) -> dict[str, Any]:
    """``method=supervised`` or ``method=actnetformer,beta=0``: keys and YAML scalar values."""
    out: dict[str, Any] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BaselineError(f"--baseline takes key=value[,key=value], got {text!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def baseline_cell(data: SearchData, cells: Sequence[Cell], wanted: dict[str, Any]) -> Cell:
    """The one configuration whose trials have every ``wanted`` value; a clear error listing them otherwise."""
    found = [c for c in cells if all(same_value(c.trials[0].get(k), v) for k, v in wanted.items())]
    unknown = [k for k in wanted if k not in data.trials[0]] if data.trials else list(wanted)
    if unknown or len(found) != 1:
        what = f"unknown keys {', '.join(unknown)}" if unknown else f"matches {len(found)} configurations"
        listed = "; ".join(data.label(c.key, short=False) for c in cells)
        raise BaselineError(f"--baseline {_pairs(wanted)}: {what}; the configurations are: {listed}")
    return found[0]


def by_seed(cell: Cell) -> dict[Any, float]:
    """The configuration's final values by seed (a seed run twice: its last trial), for pairing by seed."""
    return {t.get("seed"): v for v, t in cell.scored}


def resources(data: SearchData) -> dict[str, float] | None:
    """Per trial: workers, CPUs and GPUs per worker, as the search ran them (``--workers`` etc. applied); None for
    a search from before the searches table recorded them (its space file's may not be what ran)."""
    found = data.search.get("resources")
    if not found:
        return None
    given = json.loads(found)
    return {k: float(given[k]) for k in ("workers", "cpus_per_worker", "gpus_per_worker")}


def render(data: SearchData, metric: str | None = None, baseline: str | None = None) -> str:
    """The whole page as one HTML string."""
    metric = metric or data.metric
    mode = direction(metric, data.metric, data.mode)
    cells = data.cells(metric)
    base = baseline_cell(data, cells, parse_baseline(baseline)) if baseline else None  # fails before any drawing
    with tempfile.TemporaryDirectory() as folder:
        figures = [(f, base64.b64encode(f.path.read_bytes()).decode()) for f in plot(data, folder, metric)]
    search = data.search
    name = search.get("name") or data.search_id
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(name)}: {_e(data.search_id)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(name)}</h1>",
        f'<p class="muted">search <code>{_e(data.search_id)}</code>, {_e(search.get("status"))}; '
        f"{len(data.trials)} of {_e(search.get('planned_trials'))} planned trials; metric {_e(search.get('metric'))} "
        f"({_e(search.get('mode'))})</p>",
    ]
    if data.space.get("description"):
        parts.append(f"<p>{_e(data.space['description'])}</p>")
    parts += _provenance(data)
    parts += _results(data, cells, metric, mode)
    parts += _baseline(data, cells, base, metric, mode)
    parts += _importances(data, cells, metric, mode)
    parts.append('<h2 id="figures">Figures</h2>')
    for figure, encoded in figures:
        parts.append(
            f'<figure><img alt="{_e(figure.path.name)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption><code>{_e(figure.path.name)}</code>: {_e(figure.caption)}</figcaption></figure>"
        )
    if not figures:
        parts.append('<p class="muted">No epoch has been reported yet.</p>')
    parts += _trials(data, metric)
    parts.append("</body></html>")
    return "\n".join(parts)


def _provenance(data: SearchData) -> list[str]:
    search = data.search
    overrides = json.loads(search.get("overrides") or "{}")
    versions = json.loads(search.get("versions") or "{}")
    res = resources(data)
    rows = [
        ("space file", search.get("space_file")),
        ("space hash", search.get("space_hash")),
        ("overrides (--set)", ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none"),
        ("seeds", search.get("seeds")),
        ("resources per trial", "not recorded by this search" if res is None else
         f"{res['workers']:g} worker(s) × {res['cpus_per_worker']:g} CPU"
         + (f" + {res['gpus_per_worker']:g} GPU" if res["gpus_per_worker"] else "")),
        ("git commit", search.get("git_commit") or "unknown (not run from a git checkout)"),
        ("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))),
        ("started", search.get("started_at")), ("resumed", search.get("resumed_at")), ("ended", search.get("ended_at")),
        ("Ray", search.get("ray_address")), ("store", search.get("store")),
    ]  # fmt: skip
    if data.runs:
        rows.insert(0, ("revision", f"{search.get('revision') or 1} (the latest; {len(data.runs)} runs of this search, below)"))
    out = ['<h2 id="provenance">Provenance</h2>', "<table>"]
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows if v is not None]
    out.append("</table>")
    out.append(f"<details><summary>the space file as run</summary><pre>{_e(search.get('space_yaml') or '')}</pre></details>")
    if data.runs:
        heads = ["revision", "started", "by", "overrides", "seeds", "space hash", "git commit", "command"]
        out.append('<table class="runs"><tr>' + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
        for run in data.runs:
            cells = [run.get("revision"), run.get("started_at"), f"{run.get('user')}@{run.get('host')}", run.get("overrides"),
                     run.get("seeds"), run.get("space_hash"), (run.get("git_commit") or "")[:12], run.get("command")]  # fmt: skip
            out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
        out.append("</table>")
    return out


def _results(data: SearchData, cells: Sequence[Cell], metric: str, mode: str) -> list[str]:
    res = resources(data)
    cpus = res["workers"] * res["cpus_per_worker"] if res else 0.0  # 0: not recorded, no column
    gpus = res["workers"] * res["gpus_per_worker"] if res else 0.0
    best = best_index([c.mean for c in cells], mode)
    early = {c.key for c in cells if any(t.get("status") != "completed" for _, t in c.scored)}
    judged = verdicts({c.key: by_seed(c) for c in cells}, mode, early)
    paper = paper_values(data, metric)
    heads = [*(data.params or ["configuration"]), f"{metric} mean ± std", "95% CI"] + (["paper"] if paper else [])
    heads += ["seeds", "not completed", "Δ best (95% CI)", "p", "verdict", "seeds needed", "trial-hours"]
    heads += (["CPU-hours"] if cpus else []) + (["GPU-hours"] if gpus else [])
    out = [
        f'<h2 id="results">Final {_e(metric)} per configuration</h2>',
        f'<p class="muted">Mean ± sample std over seeds of the last reported epoch; best mean ({_e(mode)}) in bold. '
        + (f"Paper: {_e((data.space.get('paper') or {}).get('source'))}. " if paper else "")
        + "Cost: "
        "the wall time of every trial of the configuration"
        + (", times the CPUs" + (" and GPUs" if gpus else "") + " each trial held" if cpus else "") + ".</p>",
        "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr>",
    ]
    for i, cell in enumerate(cells):
        hours = sum(t.get("wall_s") or 0.0 for t in cell.trials) / 3600
        key = [_e(value_text(v)) for v in cell.key] or ["all trials"]
        _, low, high = mean_ci([v for v, _ in cell.scored])
        values = [_mean_std(cell.mean, cell.std), interval_text(low, high, 2)] + ([_number(paper.get(cell.key))] if paper else [])
        values += [len(cell.scored), cell.unfinished, *verdict_cells(judged.of.get(cell.key), 2), f"{hours:.3f}"]
        values += ([f"{hours * cpus:.3f}"] if cpus else []) + ([f"{hours * gpus:.3f}"] if gpus else [])
        row = '<tr class="best">' if i == best else "<tr>"
        out.append(
            row + "".join(f"<td>{k}</td>" for k in key)
            + "".join(f'<td class="n">{_e(v)}</td>' for v in values) + "</tr>"
        )  # fmt: skip
    total = sum(t.get("wall_s") or 0.0 for t in data.trials) / 3600
    out.append("</table>")
    out += [f"<p>{_e(line)}</p>" for line in judged.footer(lambda key: data.label(key, short=False), metric)]
    out.append(f'<p class="muted">All trials: {total:.3f} trial-hours'
               + (f", {total * cpus:.3f} CPU-hours" if cpus else "")
               + (f", {total * gpus:.3f} GPU-hours" if gpus else "") + ".</p>")  # fmt: skip
    return out


def _baseline(data: SearchData, cells: Sequence[Cell], base: Cell | None, metric: str, mode: str) -> list[str]:
    out = ['<h2 id="baseline">Against a baseline, paired by seed</h2>']
    if base is None:
        example = f"{data.params[0]}={value_text(cells[0].key[0])}" if data.params and cells else "method=supervised"
        out.append(f'<p class="muted">No baseline chosen: <code>python -m results report … --baseline {_e(example)}</code> '
                   "adds each configuration's difference to it, seed by seed.</p>")  # fmt: skip
        return out
    out.append(
        f"<p>Baseline: <b>{_e(data.label(base.key, short=False))}</b> ({_mean_std(base.mean, base.std)} {_e(metric)}). "
        f"Each row: the configuration's final {_e(metric)} minus the baseline's on the same seed, mean ± std over "
        f"the seeds both have, its 95% t interval and paired t-test p, and on how many of them the configuration is "
        f"better ({_e(mode)}).</p>"
    )
    heads = [*(data.params or ["configuration"]), "difference", "95% CI", "p", "wins", "per seed"]
    out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr>")
    for cell in cells:
        if cell is base:
            continue
        diff = paired_difference(by_seed(cell), by_seed(base))
        wins = sum(d > 0 if mode == "max" else d < 0 for d in diff.diffs)
        per_seed = ", ".join(f"{d:+.2f}" for d in diff.diffs)
        numbers = [_mean_std(diff.mean, diff.std, signed=True), interval_text(diff.low, diff.high, 2), p_text(diff.p), f"{wins} of {diff.n}"]
        out.append(
            "<tr>" + "".join(f"<td>{_e(value_text(v))}</td>" for v in cell.key)
            + "".join(f'<td class="n">{_e(v)}</td>' for v in numbers) + f"<td>{_e(per_seed)}</td></tr>"
        )  # fmt: skip
    out.append("</table>")
    return out


def _importances(data: SearchData, cells: Sequence[Cell], metric: str, mode: str) -> list[str]:
    """A sampled search's parameter importances (``results.importance``); nothing for a grid."""
    if not data.sampled:
        return []
    out = ['<h2 id="importances">Parameter importances</h2>']
    found = importances(data, cells, mode)
    if found is None:
        done = [c.mean for c in cells if c.scored and not c.unfinished]
        why = "they all scored the same" if len(done) > 1 else "at least two are needed"
        out.append(f'<p class="muted">No importances: {len(done)} configuration(s) whose every seed completed, and {why}.</p>')
        return out
    out.append(
        f'<p class="muted">Optuna\'s {EVALUATOR} evaluator for the final {_e(metric)} ({_e(mode)}): how differently each '
        "sampled parameter is spread among the best configurations than among all, as shares summing to 1, over the "
        f"{found.configurations} configurations whose every seed completed (their mean over seeds); those stopped early "
        "are left out, as Optuna leaves out pruned trials. Few configurations make it a rough guide.</p>"
    )
    out.append('<table class="importances"><tr><th>parameter</th><th>importance</th></tr>')
    out += [f'<tr><td>{_e(name)}</td><td class="n">{share:.3f}</td></tr>' for name, share in found.shares.items()]
    out.append("</table>")
    return out


def _trials(data: SearchData, metric: str) -> list[str]:
    staged = any(t.get(c) for t in data.trials for c in STAGE_COLUMNS)  # a pipeline method's search
    revised = len({t.get("revision") for t in data.trials}) > 1  # trials ran under several revisions of the search
    heads = ["trial", *data.params, "seed", *(["revision"] if revised else []), "status", "epochs", f"final {metric}", f"best {metric}", "wall s"]
    heads += [c.replace("_", " ") for c in STAGE_COLUMNS] if staged else []
    out = ['<h2 id="trials">Trials</h2>']
    if staged:
        out.append(
            '<p class="muted">Stages built: the stage results (teachers) the trial trained; reused: those it found '
            "trained by another trial, or waited for; trials with the same stage keys share those results.</p>"
        )
    out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr>")
    for t in data.trials:
        cells = [t["trial_id"], *(value_text(t.get(p)) for p in data.params), t.get("seed"),
                 *([t.get("revision")] if revised else []), t.get("status")]  # fmt: skip
        numbers = [t.get("epochs_run"), t.get(f"final_{metric}"), t.get(f"best_{metric}"), t.get("wall_s")]
        used = [_lines(t.get(c)) for c in STAGE_COLUMNS] if staged else []
        out.append(
            "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells)
            + "".join(f'<td class="n">{_e(_number(v))}</td>' for v in numbers)
            + "".join(f"<td>{u}</td>" for u in used) + "</tr>"
        )  # fmt: skip
    out.append("</table>")
    return out


def _lines(listed: str | None) -> str:
    """A comma-separated trials column, an item a line; a ``stage=key`` item with its key shortened to the 8
    characters the stages figure labels it with."""
    items = [item.partition("=") for item in (listed or "").split(",") if item]
    return "<br>".join(_e(name) + (f" <code>{_e(key[:8])}</code>" if key else "") for name, _, key in items)


def write(data: SearchData, out: str | Path, metric: str | None = None, baseline: str | None = None) -> Path:
    """Render and write the page atomically (a reader never sees half a page): under a temporary name of its own
    beside ``out``, then renamed; a failed write (``out`` a folder, a full disk) removes the temporary again."""
    out = Path(out)
    page = render(data, metric, baseline)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own, so two writers never share one; not mkstemp, whose 0600 the page would keep
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _mean_std(mean: float, std: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return "no value"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if math.isnan(std) else f"{text} ± {std:.2f}"


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _pairs(wanted: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in wanted.items())


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))
