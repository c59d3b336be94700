"""Figures and the HTML report of a search, from a ledger written through the store; the page rendered by Chromium."""

from __future__ import annotations

import html
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from browser import render
from results.page import BaselineError, write
from results.plot import curves, load, paper_values, plot, stages
from results.store import Store

from conftest import STAGES, STUDENT_EPOCHS, stage_key, timebalance_search, write_search

ROOT = Path(__file__).resolve().parents[1]
# threshold → seed → (final top1, status); 0.95 on seed 0 was stopped by ASHA after one epoch.
FINAL = {0.5: {0: (30.0, "completed"), 1: (34.0, "completed")},
         0.8: {0: (40.0, "completed"), 1: (36.0, "completed")},
         0.95: {0: (20.0, "stopped"), 1: (38.0, "completed")}}  # fmt: skip
GRID_SPACE = {
    "name": "tau-test",
    "description": "threshold sweep",
    "space": {"threshold": {"grid": [0.5, 0.8, 0.95]}},
    "seeds": 2,
    "search": {"type": "grid"},
    "paper": {"source": "Table 1, UCF-101 1 %", "metric": "top1", "values": [{"threshold": 0.8, "value": 27.6}]},
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A grid search over three thresholds on two seeds, two workers with half a GPU each per trial, every trial
    360 s; and an Optuna search whose two parameters were sampled."""
    store = Store(tmp_path / "store")
    trials, epochs = [], []
    for threshold, seeds in FINAL.items():
        for seed, (top1, status) in seeds.items():
            trial_id = f"t{threshold}-{seed}"
            trials.append({"trial_id": trial_id, "threshold": threshold, "lr": 0.1, "seed": seed, "status": status,
                           "stopped_at_epoch": 1 if status == "stopped" else None, "wall_s": 360.0,
                           "started_at": f"2026-11-29T00:0{len(trials)}:00+00:00"})  # fmt: skip
            for n in (1,) if status == "stopped" else (1, 2):
                last = n == (1 if status == "stopped" else 2)
                epochs.append({"trial_id": trial_id, "seed": seed, "epoch": n, "top1": top1 if last else top1 - 5,
                               "aux_top1": top1 / 2, "loss": 1.0 / n, "mask_rate_primary": threshold * n / 2,
                               "mask_rate_aux": 0.5, "pl_acc_primary": 0.6, "pl_acc_aux": math.nan})  # fmt: skip
    write_search(store, "grid", GRID_SPACE, {"workers": 2, "cpus_per_worker": 1.0, "gpus_per_worker": 0.5}, trials, epochs)
    sampled = {"name": "hpo-test", "space": {"threshold": {"uniform": [0.5, 0.95]}, "lr": {"loguniform": [0.01, 0.1]}},
               "search": {"type": "optuna"}}  # fmt: skip
    trials = [{"trial_id": f"o{i}", "threshold": 0.5 + 0.1 * i, "lr": 0.01 * (i + 1), "seed": 0, "status": "completed",
               "wall_s": 60.0, "started_at": f"2026-11-29T00:0{i}:00+00:00"} for i in range(4)]  # fmt: skip
    epochs = [{"trial_id": f"o{i}", "seed": 0, "epoch": 1, "top1": [20.0, 35.0, 30.0, 40.0][i], "aux_top1": math.nan} for i in range(4)]
    write_search(store, "opt", sampled, {"workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}, trials, epochs)
    return store


def test_figures_of_a_grid_search(store: Store, tmp_path: Path) -> None:
    data = load(store, "tau-test")
    assert data.search_id == "grid" and data.params == ["threshold"] and not data.sampled
    cells = {c.key: c for c in data.cells("top1")}
    assert cells[(0.8,)].mean == 38.0 and cells[(0.8,)].std == pytest.approx(math.sqrt(8))
    assert cells[(0.95,)].unfinished == 1
    assert paper_values(data, "top1") == {(0.8,): 27.6} and paper_values(data, "aux_top1") == {}
    drawn = plot(data, tmp_path / "figures")
    assert [f.path.name for f in drawn] == ["ablation_top1.png", "curves_top1.png", "pseudo_labels.png"]
    for figure in drawn:
        image = matplotlib.image.imread(figure.path)
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.01, figure.path
        assert figure.caption
    assert "paper's value (Table 1, UCF-101 1 %)" in drawn[0].caption
    assert not list((tmp_path / "figures").glob(".*"))  # no temporary files left


def test_figures_of_an_optuna_search(store: Store, tmp_path: Path) -> None:
    data = load(store, "opt")
    assert data.sampled == {"threshold": "uniform", "lr": "loguniform"}
    names = [f.path.name for f in plot(data, tmp_path)]
    assert names == ["curves_top1.png", "params_top1.png", "best_so_far_top1.png"]  # no pseudo-labels reported


def test_report_pairs_seeds_against_the_baseline_and_counts_the_cost(store: Store, tmp_path: Path) -> None:
    page = write(load(store, "grid"), tmp_path / "r.html", baseline="threshold=0.5").read_text()
    text = re.sub(r"<[^>]+>", " ", page)
    # 0.8 − 0.5 per seed: +10, +2 (wins both); 0.95 − 0.5: −10 (its stopped trial), +4
    assert "+6.00 ± 5.66" in text and "2 of 2" in text and "+10.00, +2.00" in text
    assert "-3.00 ± 9.90" in text and "1 of 2" in text and "-10.00, +4.00" in text
    # each configuration: 2 trials × 360 s = 0.2 trial-hours, × 2 workers × 1 CPU, × 2 workers × 0.5 GPU
    header = re.search(r"<tr><th>threshold</th><th>top1 mean ± std</th>.*?</tr>", page).group(0)
    assert "GPU-hours" in header and "CPU-hours" in header
    best = re.search(r'<tr class="best">(.*?)</tr>', page).group(1)
    # 38 ± 2.83 over 2 seeds: ± t(0.975, 1) · 2.83 / √2 = ± 25.41
    assert re.sub(r"<[^>]+>", " ", best).split() == ["0.8", "38.00", "±", "2.83", "[12.59,", "63.41]", "27.60", "2", "0", "best",
                                                     "0.200", "0.400", "0.200"]  # fmt: skip
    # 0.5 − 0.8 per seed: −10, −2, within noise; 0.95 has a stopped trial, so is left out of the verdict
    results = page[page.index('<h2 id="results">'):page.index('<h2 id="baseline">')]
    rows = {r[0]: r for r in (re.sub(r"<[^>]+>", " ", m).split() for m in re.findall(r"<tr>(<td>.*?)</tr>", results))}
    assert rows["0.5"][8:15] == ["-6.00", "[-56.82,", "44.82]", "0.37", "not", "resolved", "10"]
    assert rows["0.95"][8:10] == ["not", "completed"]
    assert ("best: threshold=0.8 (38), among completed configurations; 1 configuration cannot be told apart from it at "
            "this noise (2 seeds); the observed gap to it (6 top1) would need 10 seeds to resolve.") in text
    assert "not completed: threshold=0.95: a trial stopped early" in text
    assert "+6.00 ± 5.66 [-44.82, 56.82] 0.37 2 of 2" in " ".join(text.split())  # the baseline's interval and test
    assert "<th>paper</th>" in header and "Paper: Table 1, UCF-101 1 %." in text  # the paper's number beside ours
    for provenance in ("spaces/tau-test.yaml", "dataset=synthetic", "0123abcd", "ray 2.60.0", "2 worker(s) × 1 CPU + 0.5 GPU"):
        assert provenance in text, provenance
    assert page.count('src="data:image/png;base64,') == 3 and not re.search(r'(src|href)="(https?:)?//', page)
    assert "stages built" not in page  # no stage columns for a search without stages


def test_a_baseline_that_picks_no_single_configuration_is_refused(store: Store, tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"threshold=0.7: matches 0 configurations; the configurations are: threshold=0.5"):
        write(load(store, "grid"), tmp_path / "r.html", baseline="threshold=0.7")
    with pytest.raises(BaselineError, match="unknown keys colour"):
        write(load(store, "grid"), tmp_path / "r.html", baseline="colour=red")
    assert not (tmp_path / "r.html").exists()
    cli = subprocess.run(
        [sys.executable, "-m", "results", "report", "grid", "--store", store.uri, "--out", str(tmp_path / "r.html"),
         "--baseline", "lr=0.1"], capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert cli.returncode == 2 and "lr=0.1: matches 3 configurations" in cli.stderr


def test_commands_write_the_figures_and_the_page_without_torch_or_ray(store: Store, tmp_path: Path) -> None:
    probe = (
        "import sys; from results.__main__ import main; "
        f"assert main(['plot', 'grid', '--store', {store.uri!r}, '--out', {str(tmp_path / 'f')!r}]) == 0; "
        f"assert main(['report', 'grid', '--store', {store.uri!r}, '--out', {str(tmp_path / 'r.html')!r}]) == 0; "
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["ablation_top1.png", "curves_top1.png", "pseudo_labels.png"]
    assert (tmp_path / "r.html").stat().st_size > 10_000


def test_stage_results_get_their_own_figure_and_the_trials_their_stages(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    timebalance_search(store)
    data = load(store, "tb-test")
    assert {e["trial_id"] for e in data.epochs} == {t["trial_id"] for t in data.trials}  # the students' rows only
    assert len(data.epochs) == 4 * STUDENT_EPOCHS and len(data.stage_epochs) == 2 * sum(STAGES.values())
    assert [f.path.name for f in plot(data, tmp_path / "figures")] == ["ablation_top1.png", "curves_top1.png", "stages.png"]
    fig, _, _ = curves(data, "top1")
    [panel] = fig.axes[:1]
    assert max(max(line.get_xdata()) for line in panel.lines) == STUDENT_EPOCHS  # no 6-epoch stage curve
    assert max(max(line.get_ydata()) for line in panel.lines) < 90  # nor the teachers' top-1
    fig, _, caption = stages(data, "top1")
    assert [ax.get_title() for ax in fig.axes] == list(STAGES)  # in the order the stages were built
    for ax, (stage, epochs) in zip(fig.axes, STAGES.items()):
        assert [len(line.get_xdata()) for line in ax.lines] == [epochs, epochs]  # a result per seed
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        tested = " (top1 90.0, aux_top1 80.0)" if stage == "finetune_teachers" else ""
        assert labels == [f"{stage_key(stage, seed)[:8]} seed {seed}{tested}" for seed in (0, 1)]
    page = write(data, tmp_path / "tb.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and 'alt="stages.png"' in page and html.escape(caption) in page
    header = re.search(r"<tr><th>trial</th>.*?</tr>", page).group(0)
    assert header.endswith("<th>stages built</th><th>stages reused</th><th>stage keys</th></tr>")
    row = re.search(r"<tr><td>tb1.0-1</td>.*?</tr>", page).group(0)
    keys = "<br>".join(f"{stage} <code>{stage_key(stage, 1)[:8]}</code>" for stage in STAGES)
    assert row.endswith(f"<td></td><td>{'<br>'.join(STAGES)}</td><td>{keys}</td></tr>")


def test_chromium_shows_the_report_and_its_figures(store: Store, tmp_path: Path) -> None:
    page = write(load(store, "grid"), tmp_path / "report.html", baseline="threshold=0.5")
    seen = render(
        page.as_uri(),
        "({images: Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.getBoundingClientRect().width]),"
        " fetched: performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith('data:')),"
        " headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent), title: document.title})",
        tmp_path / "report.png",
    )
    assert seen["title"] == "tau-test: grid"
    assert seen["headings"] == ["Provenance", "Final top1 per configuration", "Against a baseline, paired by seed", "Figures", "Trials"]
    assert [i[0] for i in seen["images"]] == ["ablation_top1.png", "curves_top1.png", "pseudo_labels.png"]
    assert all(complete and natural > 300 and shown > 300 for _, complete, natural, shown in seen["images"]), seen["images"]
    assert seen["fetched"] == []  # self-contained: nothing loaded from anywhere
    shot = matplotlib.image.imread(tmp_path / "report.png")
    assert shot.shape[1] == 1300 and shot.shape[0] > 1500 and shot.std() > 0.05
