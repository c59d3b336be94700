"""The benchmark command: seeds as a list or a count, its JSON, resuming from one file per run."""

from __future__ import annotations

import json
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
    (step,) = rows(printed, "| supervised ≤ fixmatch")
    assert step.endswith("/2 seeds |")  # the paired gain is over both seeds


def test_a_second_run_reuses_every_finished_run(quick: list[str], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = bench(*quick, "--seeds", "1", "--runs", str(runs))
    assert first.startswith("2 runs to train (0 found") and len(list(runs.glob("*.json"))) == 2
    again = bench(*quick, "--seeds", "1", "--runs", str(runs), "--tables-only")
    assert again.startswith("0 runs to train (2 found")
    assert rows(again, "| supervised") == rows(first, "| supervised")  # the same numbers, read from the run files
