"""The benchmark command: seeds as a list or a count, its JSON, resuming from one file per run."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ssl_gain.py"), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rows(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A few steps on a small synthetic set of its own, so the benchmark's real code path runs in seconds."""
    data = tmp_path_factory.mktemp("bench-data")
    return [
        "--set", f"synthetic_root={data}", "--set", "synthetic_classes=3", "--set", "synthetic_train_per_class=6",
        "--set", "synthetic_test_per_class=2", "--set", "labeled_per_class=2", "--set", "epochs=1",
        "--set", "steps_per_epoch=1", "--set", "batch_size=2", "--set", "mu=1", "--methods", "supervised,fixmatch",
    ]  # fmt: skip


def test_seeds_as_a_list_and_json_keeps_base_and_runs(quick: list[str], tmp_path: Path) -> None:
    out = tmp_path / "runs.json"
    printed = bench(*quick, "--seeds", "11,12", "--out", str(out))
    saved = json.loads(out.read_text())
    assert saved["base"]["epochs"] == 1 and saved["base"]["primary_backbone"] == "resnet3d_50"
    assert sorted((r["variant"], r["seed"]) for r in saved["runs"]) == [
        ("fixmatch", 11), ("fixmatch", 12), ("supervised", 11), ("supervised", 12)
    ]
    assert all(len(r["history"]) == 1 and "top1" in r["history"][0] for r in saved["runs"])
    assert "mean ± std over 2 seeds" in printed
    (step,) = rows(printed, "| supervised < fixmatch")
    cells = [c.strip() for c in step.strip("|").split("|")]
    assert len(cells[4].split(" / ")) == 2  # the paired gain is over both seeds, one gain per seed
    assert cells[5] in {"holds", "reversed", "not resolved at this noise"}


def test_json_scores_gains_and_noise_sources_follow_from_the_runs(quick: list[str], tmp_path: Path) -> None:
    """``--json`` and ``--noise``: each run's score is the mean of its last epochs, each gain the paired difference
    with the verdict its interval gives, and the noise sources are the spreads of the runs the design trained."""
    from results import stats

    result, history = tmp_path / "result.json", tmp_path / "history.json"
    printed = bench(*quick, "--set", "epochs=2", "--score-epochs", "2", "--seeds", "3", "--noise",
                    "--json", str(result), "--out", str(history))  # fmt: skip
    saved, runs = json.loads(result.read_text()), json.loads(history.read_text())["runs"]
    # 3 seeds on their own subsets, 2 more training seeds on seed 0's subset, 2 more subsets under seed 0's training
    assert len(runs) == 2 * 7 and {(r["seed"], r["config"].get("labeled_seed", r["seed"])) for r in runs} == {
        (0, 0), (1, 1), (2, 2), (1, 0), (2, 0), (0, 1), (0, 2)
    }
    full = {(r["variant"], r["seed"], r["config"].get("labeled_seed", r["seed"])): [h["top1"] for h in r["history"]] for r in runs}
    scores = {(r["method"], r["seed"]): r["score"] for r in saved["runs"]}
    assert len(scores) == 6 and all(scores[m, s] == pytest.approx(sum(full[m, s, s]) / 2) for m, s in scores)
    (gain,) = saved["gains"]
    assert (gain["better"], gain["worse"]) == ("fixmatch", "supervised")
    by_seed = {int(s): g for s, g in gain["by_seed"].items()}
    assert by_seed == pytest.approx({s: scores["fixmatch", s] - scores["supervised", s] for s in range(3)})
    diff = stats.paired_difference(by_seed, {s: 0.0 for s in by_seed})
    assert gain["verdict"] == stats.claim_verdict(diff)
    noise = saved["noise"]["supervised"]
    assert noise["runs"] == {"training": 3, "subset": 3, "total": 3}
    spread = lambda pairs: statistics.variance([sum(full["supervised", s, k]) / 2 for s, k in pairs])  # noqa: E731
    assert noise["total"] == pytest.approx(spread([(0, 0), (1, 1), (2, 2)]))
    training = spread([(0, 0), (1, 0), (2, 0)])
    assert noise["training"] == pytest.approx(training - noise["evaluation"])
    assert noise["subset"] == pytest.approx(spread([(0, 0), (0, 1), (0, 2)]) - training)
    assert noise["evaluation"] > 0 and "fixmatch − supervised" in saved["noise"]
    assert rows(printed, "| training seed, labeled subset fixed") and rows(printed, "| evaluation sample")


def test_a_second_run_reuses_every_finished_run(quick: list[str], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = bench(*quick, "--seeds", "1", "--runs", str(runs))
    assert first.startswith("2 runs to train (0 found") and len(list(runs.glob("*.json"))) == 2
    again = bench(*quick, "--seeds", "1", "--runs", str(runs), "--tables-only")
    assert again.startswith("0 runs to train (2 found")
    assert rows(again, "| supervised") == rows(first, "| supervised")  # the same numbers, read from the run files


def test_step_bench_times_the_loop_step_against_bare_passes() -> None:
    """``bench/step.py`` runs the loop's own ``train_step`` (here at tiny scale) and ends with its figures."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "step.py"), "--scale", "tiny", "--steps", "1", "--warmup", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.splitlines()[-1].split()
    assert last[0::2] == ["ratio", "step_ms", "reference_ms"] and all(float(v) > 0 for v in last[1::2])


def test_trial_overhead_splits_a_trials_wall_time_from_its_rows(tmp_path: Path) -> None:
    """bench/trial_overhead.py's arithmetic on a hand-made ledger: two trials, one at a time after the other."""
    import importlib.util

    from results.store import Store

    spec = importlib.util.spec_from_file_location("trial_overhead", ROOT / "bench" / "trial_overhead.py")
    overhead = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overhead)
    store = Store(tmp_path)

    def at(second: float) -> str:
        return f"2026-01-01T00:00:{second:09.6f}+00:00"

    store.append("searches", "s", [{"search_id": "s", "started_at": at(0), "ended_at": at(50), "status": "completed"}])
    nan = float("nan")
    # trial a: starts at 1, fit at 2, worker at 6 (startup 4), first step at 8 (setup 2); epochs of 10 s whose
    # rows land 1 s after each epoch ends; ended 0.5 s after its last row. Trial b: the same, 24.5 s later.
    for trial, t0 in (("a", 1.0), ("b", 25.5)):
        store.append("trials", "s", [{"trial_id": trial, "status": "completed", "wall_s": 21.5 + 0.5, "started_at": at(t0), "ended_at": at(t0 + 22.0)}])  # fmt: skip
        store.append("epochs", "s", [
            {"trial_id": trial, "epoch": 1, "epoch_time_s": 10.0, "reported_at": at(t0 + 7 + 10 + 1), "startup_s": 4.0, "setup_s": 2.0},
            {"trial_id": trial, "epoch": 2, "epoch_time_s": 2.5, "reported_at": at(t0 + 18 + 2.5 + 1), "startup_s": nan, "setup_s": nan},
        ])  # fmt: skip
    trials, total = overhead.breakdown(store, "s")
    assert [t["trial"] for t in trials] == ["a", "b"]
    a = trials[0]
    assert a["epochs"] == 12.5 and a["overhead"] == 22.0 - 12.5
    assert (a["startup"], a["setup"]) == (4.0, 2.0)
    assert a["reports"] == pytest.approx(2.0) and a["teardown"] == pytest.approx(0.5)
    assert a["to fit"] == pytest.approx(1.0)  # 7 s to the first step, less startup, setup and the first report's 1 s
    assert total == {"wall": 50.0, "epochs": 25.0, "concurrency": 1}
