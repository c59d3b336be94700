"""Answers with their uncertainty: intervals, paired tests, seeds needed, and the verdict in ``results table`` and at the
end of ``search run``, on a store written through ``results.store.Store`` (no Ray started)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
import yaml
from scipy import stats

from results.__main__ import main
from results.report import seed_table
from results.stats import (
    BEST, BETTER, HOLDS, NOT_COMPLETED, NOT_RESOLVED, ONE_SEED, REVERSED, UNRESOLVED, WORSE, claim_verdict, mean_ci,
    paired_difference, seeds_needed, seeds_text, verdicts,
)  # fmt: skip
from results.store import Store
from trainable.config import TrainConfig

# threshold → final top1 on seeds 0, 1, 2. 0.8 is best; 0.5 is 9.5–10.5 points behind it on every seed (worse);
# 0.7 is a point either side of it (within noise); 0.95's seed 2 was stopped by ASHA after one epoch (an early value).
FINAL = {0.5: [44.0, 45.5, 43.0], 0.7: [53.0, 56.0, 52.5], 0.8: [54.0, 55.0, 53.5], 0.95: [50.0, 51.0, 30.0]}
SPACE = {
    "name": "verdict-test", "metric": "top1", "mode": "max", "base": {"dataset": "synthetic", "epochs": 2},
    "space": {"threshold": {"grid": list(FINAL)}}, "seeds": 3, "scheduler": {"type": "none"}, "search": {"type": "grid"},
    "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
}  # fmt: skip


def test_mean_ci_is_the_t_interval() -> None:
    mean, low, high = mean_ci([1.0, 2.0, 3.0])
    # std 1, so the half-width is t(0.975, 2) / √3 = 4.3027 / 1.7321 = 2.484 (a normal interval would give 1.13)
    assert mean == 2.0 and low == pytest.approx(2.0 - 2.484, abs=1e-3) and high == pytest.approx(2.0 + 2.484, abs=1e-3)
    mean, low, high = mean_ci([5.0])
    assert mean == 5.0 and math.isnan(low) and math.isnan(high)  # one seed: no spread, no interval
    assert mean_ci([4.0, 4.0]) == (4.0, 4.0, 4.0)


def test_paired_difference_uses_shared_seeds_only() -> None:
    a = {0: 1.0, 1: 2.0, 2: 4.0, 3: 9.9}
    b = {0: 0.5, 1: 2.5, 2: 1.0, 5: 7.0}
    diff = paired_difference(a, b)
    assert diff.diffs == (0.5, -0.5, 3.0) and diff.n == 3  # seeds 3 and 5 have no partner
    assert diff.mean == pytest.approx(1.0) and diff.std == pytest.approx(math.sqrt(3.25))
    assert diff.p == pytest.approx(stats.ttest_rel([1.0, 2.0, 4.0], [0.5, 2.5, 1.0]).pvalue)
    assert diff.p == pytest.approx(0.438, abs=1e-3)  # t = 1 / (1.803 / √3) = 0.961 on 2 degrees of freedom
    half = 4.3027 * math.sqrt(3.25) / math.sqrt(3)
    assert (diff.low, diff.high) == (pytest.approx(1.0 - half, abs=1e-3), pytest.approx(1.0 + half, abs=1e-3))
    one = paired_difference({0: 1.0, 1: 2.0}, {1: 0.0})
    assert one.diffs == (2.0,) and math.isnan(one.p) and math.isnan(one.low)
    same = paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 1.0})  # the same gap on every seed: certain
    assert same.p == 0.0 and (same.low, same.high) == (1.0, 1.0)


@pytest.mark.parametrize("diffs", [[1.0, -2.0, 3.0, 0.5], [-10.0, -9.5, -10.5], [0.2, 0.1, 0.25, 0.3, -0.1]])
def test_the_interval_excludes_zero_exactly_when_the_test_rejects(diffs: list[float]) -> None:
    diff = paired_difference(dict(enumerate(diffs)), dict.fromkeys(range(len(diffs)), 0.0))
    assert (diff.low > 0 or diff.high < 0) == (diff.p < 0.05)


def test_a_claim_holds_only_when_its_interval_is_above_zero() -> None:
    """The benchmark's order verdicts: 4 of 5 seeds ahead is not enough when one seed's loss is large."""
    def verdict(diffs: list[float]) -> str:
        return claim_verdict(paired_difference(dict(enumerate(diffs)), dict.fromkeys(range(len(diffs)), 0.0)))

    assert verdict([4.0, 5.5, 3.0, 6.0, 4.5]) == HOLDS
    assert verdict([-4.0, -5.5, -3.0, -6.0, -4.5]) == REVERSED
    assert verdict([4.0, 5.5, 3.0, 6.0, -20.0]) == UNRESOLVED  # ahead on 4 seeds of 5, mean −0.3
    assert verdict([4.0, 5.5, 3.0, 6.0, -2.0]) == UNRESOLVED  # mean +3.3, interval [−0.7, 7.3]
    assert verdict([5.0]) == UNRESOLVED  # one seed: no interval


def test_seeds_needed_for_a_paired_t_test() -> None:
    # effect size d = mean / std = 1: a two-sided paired t-test at alpha 0.05 reaches power 0.8 with 10 pairs
    # (power 0.748 with 9, 0.803 with 10); d = 0.5 needs 34 (the textbook values, e.g. statsmodels' TTestPower)
    assert seeds_needed([0.0, 1.0, 2.0]) == 10
    assert seeds_needed([-0.5, 0.5, 1.5]) == 34
    # a larger effect at the same spread needs fewer seeds, never more
    needed = [seeds_needed([m - 1.0, m, m + 1.0]) for m in (0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 4.0)]
    assert needed == sorted(needed, reverse=True) and needed[0] > needed[-1] and needed[-1] >= 2
    assert seeds_needed([-2.0, -1.0, 0.0]) == 10  # the sign does not matter
    tiny = seeds_needed([-1.0, 0.02, 1.04])  # d = 0.02: beyond the search
    assert tiny == 1001 and seeds_text(tiny) == ">1000"
    assert seeds_needed([1.0, -1.0]) is None  # no gap to resolve
    assert seeds_needed([2.0, 2.0, 2.0]) is None  # no spread: every seed agrees
    assert seeds_needed([3.0]) is None and seeds_text(None) == ""


def test_verdicts_label_every_configuration_against_the_best() -> None:
    values = {"a": {0: 10.0, 1: 11.0, 2: 12.0}, "b": {0: 5.0, 1: 6.2, 2: 6.9}, "c": {0: 11.0, 1: 10.0, 2: 11.5},
              "d": {2: 1.0}, "e": {0: 20.0}}  # fmt: skip
    judged = verdicts(values, "max", early={"e"})
    assert judged.best == "a" and judged.best_mean == 11.0 and not judged.early_included
    assert {k: v.label for k, v in judged.of.items()} == {"a": BEST, "b": WORSE, "c": NOT_RESOLVED, "d": ONE_SEED, "e": NOT_COMPLETED}
    assert judged.of["a"].vs_best is None and judged.of["e"].vs_best is None
    assert judged.of["b"].vs_best.mean == pytest.approx(-4.9667, abs=1e-4) and judged.of["b"].vs_best.p < 0.05
    assert judged.of["c"].seeds_needed == seeds_needed(judged.of["c"].vs_best.diffs) and judged.of["c"].seeds_needed > 3
    # lower is better for a loss: the same values make "b" the best, and "a" and "c" worse
    assert {k: v.label for k, v in verdicts({k: values[k] for k in "abc"}, "min").of.items()} == {"a": WORSE, "b": BEST, "c": WORSE}
    # only early values: all are compared, and the verdict says it mixes budgets
    early = verdicts({"a": {0: 1.0, 1: 2.0}, "b": {0: 0.0, 1: 0.5}}, "max", early={"a", "b"})
    assert early.best == "a" and early.early_included and early.of["b"].label == NOT_RESOLVED
    assert "mixes budgets" in early.footer(str, "top1")[1]
    # the best by mean leads only through a seed the other did not run; on the shared seeds it is behind
    shared = verdicts({"a": {0: 10.0, 1: 11.0, 2: 40.0}, "b": {0: 12.0, 1: 13.1}}, "max")
    assert shared.best == "a" and shared.of["b"].label == BETTER
    assert verdicts({"a": {}}, "max").best is None and verdicts({"a": {}}, "max").footer(str, "top1") == []


def test_the_footer_gives_the_seeds_the_median_unresolved_gap_needs() -> None:
    # behind "a" by 0.5, 1, 0.4 and 3 on average, the differences' std 1 each: p 0.48, 0.23, 0.56 and 0.035
    values = {"a": {0: 12.0, 1: 12.0, 2: 12.0}, "b": {0: 12.5, 1: 10.5, 2: 11.5}, "c": {0: 12.0, 1: 10.0, 2: 11.0},
              "d": {0: 12.6, 1: 10.6, 2: 11.6}, "e": {0: 10.0, 1: 8.0, 2: 9.0}}  # fmt: skip
    judged = verdicts(values, "max")
    assert [judged.of[k].label for k in "bcde"] == [NOT_RESOLVED, NOT_RESOLVED, NOT_RESOLVED, WORSE]
    # the unresolved gaps 0.4, 0.5, 1: the median is "b"'s, an effect size of 0.5, which needs 34 seeds
    assert judged.footer(lambda k: f"x={k}", "top1")[0] == (
        "best: x=a (12); 1 configuration is worse (p < 0.05); 3 configurations cannot be told apart from it at this "
        "noise (3 seeds); the median observed gap to them (0.5 top1) would need 34 seeds to resolve."
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """The grid search of ``SPACE`` on three seeds, every trial ended, as its trials write it (their full configs)."""
    store = Store(tmp_path / "store")
    store.append("searches", "verdict", [{
        "search_id": "verdict", "name": "verdict-test", "space_yaml": yaml.safe_dump(SPACE), "seeds": "[0, 1, 2]",
        "metric": "top1", "mode": "max", "planned_trials": 12, "status": "completed", "started_at": "2026-12-01T00:00:00+00:00",
    }])  # fmt: skip
    trials, epochs = [], []
    for threshold, finals in FINAL.items():
        for seed, top1 in enumerate(finals):
            trial_id, stopped = f"v{threshold}-{seed}", threshold == 0.95 and seed == 2
            config = TrainConfig.parse({**SPACE["base"], "threshold": threshold, "seed": seed}).model_dump()
            trials.append({"trial_id": trial_id, **config, "status": "stopped" if stopped else "completed",
                           "stopped_at_epoch": 1 if stopped else None, "error": None, "wall_s": 60.0,
                           "started_at": f"2026-12-01T00:{len(trials):02d}:00+00:00"})  # fmt: skip
            last = 1 if stopped else 2
            epochs += [{"trial_id": trial_id, "seed": seed, "epoch": n, "top1": top1 - 5.0 * (last - n)} for n in range(1, last + 1)]
    store.append("trials", "verdict", trials)
    store.append("epochs", "verdict", epochs)
    return store


FOOTER = (
    "best: threshold=0.8 (54.2), among completed configurations; 1 configuration is worse (p < 0.05); 1 configuration "
    "cannot be told apart from it at this noise (3 seeds); the observed gap to it (0.333 top1) would need 97 seeds to resolve."
)


def test_results_table_marks_the_worse_and_the_unresolved(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", "verdict-test", "--store", store.uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "search verdict"
    assert lines[1].split("  ")[:2] == ["threshold", "top1 mean ± std"] and "Δ best (95% CI)" in lines[1]
    rows = {line.split()[0]: line for line in lines[3:7]}
    assert rows["0.8"].split()[:3] == ["0.8", "54.2", "±"] and "*" in rows["0.8"] and rows["0.8"].rstrip().endswith(BEST)
    assert rows["0.5"].split()[-6:] == ["-10.0", "[-11.2,", "-8.8]", "<0.001", WORSE, "2"]
    assert rows["0.7"].split()[-7:] == ["-0.3", "[-3.2,", "2.5]", "0.67", "not", "resolved", "97"]
    assert rows["0.95"].split()[-2:] == ["not", "completed"] and rows["0.95"].split()[6:8] == ["3", "1"]
    assert lines[7] == FOOTER
    assert lines[8].startswith("not completed: threshold=0.95: a trial stopped early or unfinished gives an early value")
    assert lines[9].startswith("95% CI: t interval of the mean over seeds.")
    # csv: every number in its own column, as computed by scipy from the per-seed values
    rows = {r["threshold"]: r for r in csv.DictReader(io.StringIO(seed_table(store, "verdict", fmt="csv")))}
    worse = rows["0.5"]
    assert float(worse["diff_vs_best"]) == pytest.approx(-10.0) and worse["verdict"] == WORSE and worse["best"] == "False"
    assert float(worse["p"]) == pytest.approx(stats.ttest_rel(FINAL[0.5], FINAL[0.8]).pvalue)
    half = stats.t.ppf(0.975, 2) * 0.5 / math.sqrt(3)  # the differences −10, −9.5, −10.5 have std 0.5
    assert (float(worse["diff_low"]), float(worse["diff_high"])) == (pytest.approx(-10 - half), pytest.approx(-10 + half))
    assert float(rows["0.8"]["ci_low"]) == pytest.approx(54.1667 - stats.t.ppf(0.975, 2) * 0.7638 / math.sqrt(3), abs=1e-3)
    assert (rows["0.8"]["verdict"], rows["0.8"]["diff_vs_best"], rows["0.8"]["best"]) == (BEST, "", "True")
    assert (rows["0.7"]["verdict"], rows["0.7"]["seeds_needed"]) == (NOT_RESOLVED, "97")
    assert (rows["0.95"]["verdict"], rows["0.95"]["not_completed"], rows["0.95"]["p"]) == (NOT_COMPLETED, "1", "")
    markdown = seed_table(store, "verdict", fmt="markdown").splitlines()
    assert markdown[0].endswith("| Δ best (95% CI) | p | verdict | seeds needed |")
    assert "| 0.5 | 44.2 ± 1.3 | [41.0, 47.3] | 3 | 0 | -10.0 [-11.2, -8.8] | <0.001 | worse | 2 |" in markdown
    assert "| 0.8 | **54.2 ± 0.8** |" in markdown[4] and FOOTER in markdown
    latex = seed_table(store, "verdict", fmt="latex").splitlines()
    assert r"0.5 & 44.2 $\pm$ 1.3 & [41.0, 47.3] & 3 & 0 & -10.0 [-11.2, -8.8] & $<$0.001 & worse & 2 \\" in latex
    assert latex[0] == f"% {FOOTER}" and latex[-1] == r"\end{tabular}"  # the footer as comments, the table as before
    tabular = latex.index(r"\begin{tabular}{lrrrrrrlr}")
    assert r"$\Delta$ best (95\% CI)" in latex[tabular + 2]


def test_search_run_ends_with_the_verdict(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A search whose every trial ended runs nothing (no Ray) and prints its trials, then the verdict table."""
    from search.runner import run
    from search.space import load

    path = tmp_path / "verdict.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    assert run(load(path), store, name="verdict") == "verdict"
    out = capsys.readouterr().out
    trials, verdict = out.split("configurations over seeds, against the best (top1, max):")
    assert "v0.8-0" in trials and "stopped" in trials  # the trials listing is kept
    assert verdict.splitlines()[1] == "search verdict" and FOOTER in verdict.splitlines()
    assert NOT_RESOLVED in verdict and f" {WORSE}" in verdict
