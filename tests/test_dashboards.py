"""A search as TensorBoard and optuna-dashboard show it, and what the HTML report says mattered.

One real Optuna search over Ray Train trials, run and then resumed with one configuration more: its TensorBoard
event files read back with TensorBoard's own reader, its journal read back with Optuna and served by a real
optuna-dashboard on loopback (ended by its pid), its report opened in Chromium.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from results.importance import importances
from results.page import write
from results.plot import load as load_search
from results.store import Store
from results.tables import read
from search.resume import Earlier
from search.space import load
from search.tune import journal_path, param_space, searcher
from trainable.metrics import REPORTED

from browser import render
from conftest import tiny_config
from processes import free_ports, get_json, kill_tree, wait_for
from conftest import write_search

DASHBOARD = str(Path(sys.executable).with_name("optuna-dashboard"))


def optuna_space(path: Path, data: Path, num_samples: int) -> Path:
    base = tiny_config(data)
    for key in ("threshold", "lr"):
        base.pop(key, None)
    spec = {
        "name": "boards", "base": base, "metric": "loss", "mode": "min", "seeds": [0], "num_samples": num_samples, "max_concurrent": 2,
        "space": {"threshold": {"uniform": [0.0, 1.0]}, "lr": {"loguniform": [0.001, 0.05]}},
        "search": {"type": "optuna", "seed": 0, "startup_trials": 2}, "scheduler": {"type": "none"},
        "resources": {"workers": 1, "cpus_per_worker": 1},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar of a trial's folder, all its event files together, as TensorBoard reads them: tag -> step -> value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_a_search_in_tensorboard_and_optuna_dashboard_and_its_importances(ray_local: str, tiny_dataset: Path, tmp_path: Path) -> None:
    from search.runner import run

    store = Store(tmp_path / "store")
    run(load(optuna_space(tmp_path / "boards.yaml", tiny_dataset, 2)), store, name="boards")
    tune_dir = tmp_path / "store" / "tune" / "boards"
    first_events = sorted(tune_dir.glob("*/events.out.tfevents.*"))
    journal = Path(journal_path(store, "boards"))
    first_journal = journal.read_bytes()
    # resumed with one configuration more: the two that ended are kept, one new trial runs
    run(load(optuna_space(tmp_path / "boards.yaml", tiny_dataset, 3)), store, name="boards", revise=True)

    trials = read(store, "trials", "boards").to_pylist()
    epochs = read(store, "epochs", "boards").to_pylist()
    assert len(trials) == 3 and all(t["status"] == "completed" for t in trials)

    # TensorBoard: a folder per trial named by its id and the searched values only; the epoch is the step, and
    # every metric each epoch reported is there; the first run's event files are still there after the resume.
    assert len(first_events) == 2 and all(f.exists() for f in first_events)
    for t in trials:
        [folder] = [d for d in tune_dir.iterdir() if d.is_dir() and d.name.startswith(t["trial_id"] + "_")]
        assert folder.name == f"{t['trial_id']}_threshold={t['threshold']:.4g},lr={t['lr']:.4g},seed=0"
        seen = scalars(folder)
        rows = [e for e in epochs if e["trial_id"] == t["trial_id"]]
        assert [e["epoch"] for e in rows] == [1, 2]
        for row in rows:
            reported = {k: v for k, v in row.items() if k in REPORTED and k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)}
            assert {"top1", "loss", "lr", "setup_s"} <= set(reported) or row["epoch"] > 1
            for key, value in reported.items():
                assert seen[key][row["epoch"]] == pytest.approx(value, rel=1e-6), (folder.name, key, row["epoch"])
        assert not any(tag in seen for tag in ("training_iteration", "time_this_iter_s", "epoch"))

    # Optuna's journal: appended to, not rewritten, by the resumed run; every group of the ledger is a trial of the
    # study, with its parameters, its value and its value at every epoch.
    assert journal.read_bytes().startswith(first_journal) and len(journal.read_bytes()) > len(first_journal)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="boards", storage=storage)
    finished = {(t.params["threshold"], t.params["lr"]): t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(finished) == 3
    for t in trials:
        told = finished[(t["threshold"], t["lr"])]
        curve = {e["epoch"]: e["loss"] for e in epochs if e["trial_id"] == t["trial_id"]}
        assert told.value == pytest.approx(t["final_loss"]) and told.intermediate_values == pytest.approx(curve)

    # optuna-dashboard on that file, on loopback: its API answers with the study and its trials
    [port] = free_ports(1)
    log = (tmp_path / "dashboard.log").open("w")
    server = subprocess.Popen([DASHBOARD, str(journal), "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        studies = wait_for(lambda: _try_json(f"{url}/api/studies"), 60, "optuna-dashboard")["study_summaries"]
        [summary] = [s for s in studies if s["study_name"] == "boards"]
        detail = get_json(f"{url}/api/studies/{summary['study_id']}")
        shown = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert len(shown) == 3
        assert sorted(p["name"] for p in shown[0]["params"]) == ["lr", "threshold"]
        assert all(len(t["intermediate_values"]) == 2 for t in shown)
    finally:
        kill_tree(server)
        log.close()

    # the report of this sampled search says which parameter mattered for its metric, in a table a browser shows
    page = write(load_search(store, "boards"), tmp_path / "report.html")
    seen = render(
        page.as_uri(),
        "({headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),"
        " rows: Array.from(document.querySelectorAll('table.importances tr')).slice(1)"
        ".map(r => Array.from(r.cells).map(c => c.textContent))})",
        tmp_path / "report.png",
    )
    assert "Parameter importances" in seen["headings"]
    assert sorted(name for name, _ in seen["rows"]) == ["lr", "threshold"]
    assert sum(float(share) for _, share in seen["rows"]) == pytest.approx(1.0, abs=0.002)


def _try_json(url: str) -> dict | None:
    try:
        return get_json(url)
    except OSError:
        return None


def test_a_resumed_study_in_its_journal_is_not_told_twice(tmp_path: Path) -> None:
    """A first driver told configuration A (both seeds ended) and died with B half run: its journal holds A
    complete and B running. The next run, given the same ledger and journal, does not add A again, marks the
    dead run's B failed, and proposes B again for its missing seed, all in the same file."""
    fields = {
        "name": "j", "space": {"threshold": {"uniform": [0.5, 0.95]}}, "seeds": [0, 1], "num_samples": 4,
        "search": {"type": "optuna", "seed": 3, "startup_trials": 2}, "metric": "top1", "base": {"epochs": 2},
    }  # fmt: skip
    path = tmp_path / "j.yaml"
    path.write_text(yaml.safe_dump(fields))
    space = load(path)
    journal = str(tmp_path / "store" / "optuna" / "j.log")

    first = searcher(space, journal=journal, study_name="j")
    first.set_search_properties(space.spec.metric, space.spec.mode, param_space(space))
    a0, a1, b0 = first.suggest("a0"), first.suggest("a1"), first.suggest("b0")
    for trial_id, value in (("a0", 10.0), ("a1", 30.0), ("b0", 5.0)):
        first.on_trial_result(trial_id, {"top1": value, "epoch": 2})
        first.on_trial_complete(trial_id, {"top1": value, "epoch": 2})
    first.suggest("b1")  # then the driver dies

    def row(trial_id: str, config: dict, status: str) -> dict:
        return {**space.base, "trial_id": trial_id, "threshold": config["threshold"], "seed": config["seed"], "status": status}

    earlier = Earlier(
        search={"search_id": "j"},
        trials=[row("a0", a0, "completed"), row("a1", a1, "completed"), row("b0", b0, "completed"), row("b1", {**b0, "seed": 1}, "running")],
        curves={"a0": {2: 10.0}, "a1": {2: 30.0}, "b0": {2: 5.0}, "b1": {1: 6.0}},
    )
    second = searcher(space, earlier=earlier, journal=journal, study_name="j")
    second.set_search_properties(space.spec.metric, space.spec.mode, param_space(space))
    again = second.suggest("t0")
    assert (again["threshold"], again["seed"]) == (b0["threshold"], 1)

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    states = [(t.params["threshold"], t.state.name) for t in optuna.load_study(study_name="j", storage=storage).trials]
    assert states == [(a0["threshold"], "COMPLETE"), (b0["threshold"], "FAIL"), (b0["threshold"], "RUNNING")]


def test_importances_rank_first_the_parameter_the_metric_follows(tmp_path: Path) -> None:
    """Ten configurations whose top1 is 100 × threshold and whose lr is shuffled: PED-ANOVA puts threshold first; the
    configuration ASHA stopped is left out; a grid gets no importances section."""
    store = Store(tmp_path / "store")
    space = {"name": "imp", "space": {"threshold": {"uniform": [0.5, 0.95]}, "lr": {"loguniform": [0.01, 0.1]}}, "search": {"type": "optuna"}}
    trials, epochs = [], []
    for i in range(11):
        threshold, lr, status = 0.5 + 0.045 * min(i, 10), 0.01 * 10 ** (((i * 7) % 10) / 10), "stopped" if i == 10 else "completed"
        trials.append({"trial_id": f"o{i}", "threshold": threshold, "lr": lr, "seed": 0, "status": status, "wall_s": 60.0,
                       "started_at": f"2026-11-29T00:{i:02d}:00+00:00"})  # fmt: skip
        epochs.append({"trial_id": f"o{i}", "seed": 0, "epoch": 1, "top1": 100 * threshold + (50 if i == 10 else 0)})
    write_search(store, "imp", space, {"workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}, trials, epochs)
    data = load_search(store, "imp")
    found = importances(data, data.cells("top1"), "max")
    assert found is not None and found.configurations == 10
    assert list(found.shares) == ["threshold", "lr"] and sum(found.shares.values()) == pytest.approx(1.0)
    page = write(data, tmp_path / "imp.html").read_text()
    assert '<table class="importances">' in page and "over the 10 configurations" in page
    grid = {"name": "g", "space": {"threshold": {"grid": [0.5, 0.8]}}, "search": {"type": "grid"}}
    write_search(store, "g", grid, {"workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}, trials[:2], epochs[:2])
    assert "Parameter importances" not in write(load_search(store, "g"), tmp_path / "g.html").read_text()
