"""How sure the seeds let us be: intervals, paired tests and verdicts for a search's configurations.

A table of means over three seeds ranks every configuration, but a gap of a point between two of them is often the
seeds' noise: seed-to-seed spread in semi-supervised training is of the same size as the effects searched for. Two
configurations run on the same seeds share the seed's luck (its labeled subset, its initialisation), so the
difference seed by seed is much less noisy than either mean; every comparison here is therefore paired by seed.

- ``mean_ci``: the t interval of a configuration's mean over its seeds;
- ``paired_difference``: one configuration minus another on the seeds both ran, its t interval and paired t-test;
- ``seeds_needed``: how many seeds a paired t-test would need to resolve a difference of the observed size;
- ``verdicts``: the best configuration, and for every other one whether it is worse, or cannot be told apart.

``results table``, ``results report`` and the end of ``search run`` all print what ``verdicts`` decides.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Collection, Hashable, Mapping, Sequence

import numpy as np

ALPHA = 0.05  # two-sided, for the intervals (95 %), the tests and the seeds needed
POWER = 0.8
SEEDS_CAP = 1000  # seeds_needed searches no further; a result above it means "more than this"

BEST = "best"
WORSE = "worse"
NOT_RESOLVED = "not resolved"
BETTER = "better on shared seeds"
ONE_SEED = "one seed"
NOT_COMPLETED = "not completed"

# What the seeds say of a claim "a ≥ b" (a step of an expected order), from the paired difference a − b
HOLDS = "holds"
REVERSED = "reversed"
UNRESOLVED = "not resolved at this noise"

METHOD = (
    f"95% CI: t interval of the mean over seeds. Δ best: the configuration minus the best on the seeds both ran, "
    f"its 95% t interval and the paired t-test's p; worse: p < {ALPHA:g} with the best ahead. Seeds needed: for a "
    f"paired t-test (alpha {ALPHA:g}, two-sided, power {POWER:g}) to resolve a difference of the observed mean and spread."
)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation; NaN where there are too few values for either."""
    mean = sum(values) / len(values) if values else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return mean, std


def mean_ci(values: Sequence[float], level: float = 1 - ALPHA) -> tuple[float, float, float]:
    """The mean and its two-sided t interval: with 3 seeds the interval is ±2.48 standard errors, not the ±1.96 of
    a normal one, because the spread itself is estimated from 3 values. One value gives no spread: NaN bounds."""
    mean, std = mean_std(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    from scipy import stats  # here, not at import: every results command would pay scipy's start

    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Difference:
    """One configuration minus another on the seeds both ran, seed by seed."""

    diffs: tuple[float, ...]  # per shared seed, in the first configuration's seed order
    mean: float
    std: float  # sample std of the differences; NaN with fewer than two
    low: float  # the 95 % t interval of the mean difference; NaN with fewer than two
    high: float
    p: float  # two-sided paired t-test; NaN with fewer than two, or when every difference is 0

    @property
    def n(self) -> int:
        return len(self.diffs)


def paired_difference(a_by_seed: Mapping[Any, float], b_by_seed: Mapping[Any, float]) -> Difference:
    """``a`` minus ``b`` on the seeds both have (seed → final value): a seed only one of them ran says nothing about
    the difference, and pairing removes what the seed does to both. ``a``'s seeds keep their order."""
    seeds = [s for s in a_by_seed if s in b_by_seed]
    a = [float(a_by_seed[s]) for s in seeds]
    b = [float(b_by_seed[s]) for s in seeds]
    diffs = tuple(x - y for x, y in zip(a, b))
    mean, low, high = mean_ci(diffs)
    p = math.nan
    if len(diffs) > 1:
        with warnings.catch_warnings():  # identical differences: scipy warns of precision loss, and p is exact (0 or NaN)
            warnings.simplefilter("ignore", RuntimeWarning)
            from scipy import stats

            p = float(stats.ttest_rel(a, b).pvalue)
    return Difference(diffs, mean, mean_std(diffs)[1], low, high, p)


def claim_verdict(diff: Difference) -> str:
    """Whether the seeds confirm "a is ahead of b" from ``a − b`` paired by seed: ``holds`` when the 95 % interval lies
    above 0 (equivalently, the paired t-test's p < 0.05 with a ahead), ``reversed`` when it lies below, otherwise
    ``not resolved at this noise``: a count of seeds on which a was ahead would call a coin's run of heads an order."""
    if diff.n < 2 or math.isnan(diff.low):
        return UNRESOLVED
    return HOLDS if diff.low > 0 else REVERSED if diff.high < 0 else UNRESOLVED


def seeds_needed(diffs: Sequence[float], alpha: float = ALPHA, power: float = POWER, cap: int = SEEDS_CAP) -> int | None:
    """The fewest seeds with which a two-sided paired t-test at ``alpha`` detects, with probability ``power``, a true
    difference the size of the observed mean with the observed spread: how far a search is from an answer.

    The power at n seeds is the chance that a noncentral t with n − 1 degrees of freedom and noncentrality d·√n
    (d = |mean| / std) falls beyond the test's critical values. None where there is nothing to scale: fewer than two
    differences, a mean of 0 (no gap to resolve) or no spread (every seed agrees). A result above ``cap`` means
    more than ``cap`` seeds (the search stops there)."""
    mean, std = mean_std(diffs)
    if len(diffs) < 2 or mean == 0 or not std > 0:
        return None
    from scipy import stats

    n = np.arange(2, cap + 1)
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = abs(mean) / std * np.sqrt(n)
    # P(|T| > critical), the lower tail as the upper tail of −T: scipy's nct.cdf gives NaN far in the lower tail
    reached = stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality) >= power
    return int(n[reached.argmax()]) if reached.any() else cap + 1


def seeds_text(n: int | None, cap: int = SEEDS_CAP) -> str:
    """``seeds_needed`` for a reader: empty for None, ``>1000`` past the cap."""
    return "" if n is None else f">{cap}" if n > cap else str(n)


def p_text(p: float) -> str:
    """A p-value to two significant digits, ``<0.001`` below that (the test's assumptions are not that exact)."""
    return "" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.2g}"


def interval_text(low: float, high: float, digits: int) -> str:
    """``[low, high]``, empty where the interval is undefined (one seed)."""
    return "" if math.isnan(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def best_index(means: Sequence[float | None], mode: str) -> int | None:
    """The place of the best mean (ties: the first); None when no configuration has one."""
    scored = [(m, i) for i, m in enumerate(means) if m is not None and not math.isnan(m)]
    return (max if mode == "max" else min)(scored, key=lambda s: s[0])[1] if scored else None


@dataclass(frozen=True)
class Verdict:
    """What the seeds say of one configuration against the best."""

    label: str  # BEST, WORSE, NOT_RESOLVED, BETTER, ONE_SEED or NOT_COMPLETED
    vs_best: Difference | None  # this configuration minus the best; None for the best and the ones not compared
    seeds_needed: int | None  # to resolve vs_best (see seeds_needed)


def verdict_cells(verdict: Verdict | None, digits: int) -> list[str]:
    """A table row's ``Δ best (95% CI)``, ``p``, ``verdict`` and ``seeds needed`` cells (all empty for a configuration
    without a value): one wording for ``results table`` and the HTML report."""
    if verdict is None:
        return ["", "", "", ""]
    diff = verdict.vs_best
    delta = "" if diff is None else f"{diff.mean:+.{digits}f} {interval_text(diff.low, diff.high, digits)}".rstrip()
    return [delta, "" if diff is None else p_text(diff.p), verdict.label, seeds_text(verdict.seeds_needed)]


@dataclass(frozen=True)
class Verdicts:
    """The verdict on every configuration that has a value, and the rule it was reached by."""

    best: Hashable | None  # None when no configuration has a value
    best_mean: float
    of: dict[Hashable, Verdict]
    early_included: bool  # no configuration had only completed trials' values: all compared, early values included

    def footer(self, label: Callable[[Hashable], str], metric: str) -> list[str]:
        """Sentences under a table: the best, how many configurations are worse or cannot be told apart from it and
        how many seeds would resolve the typical gap, which configurations the verdict left out and why, the method."""
        if self.best is None:
            return []
        labels = (WORSE, NOT_RESOLVED, BETTER, ONE_SEED, NOT_COMPLETED)
        by = {name: [k for k, v in self.of.items() if v.label == name] for name in labels}
        left_out = by[NOT_COMPLETED]
        parts = [f"best: {label(self.best)} ({self.best_mean:.3g})" + (", among completed configurations" if left_out else "")]
        if by[WORSE]:
            parts.append(f"{_count(by[WORSE])} worse (p < {ALPHA:g})")
        if by[NOT_RESOLVED]:
            unresolved = sorted((self.of[k] for k in by[NOT_RESOLVED]), key=lambda v: abs(v.vs_best.mean))
            sizes = sorted({v.vs_best.n for v in unresolved})
            seeds = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
            parts.append(f"{_count(by[NOT_RESOLVED], 'cannot', 'cannot')} be told apart from it at this noise ({seeds} seeds)")
            median = unresolved[(len(unresolved) - 1) // 2]  # the lower median: a configuration's own gap and spread
            gap = "the observed gap to it" if len(unresolved) == 1 else "the median observed gap to them"
            if median.seeds_needed is None:
                parts.append(f"{gap} is 0: no number of seeds resolves it")
            else:
                needed = seeds_text(median.seeds_needed)
                parts.append(f"{gap} ({abs(median.vs_best.mean):.3g} {metric}) would need {needed} seeds to resolve")
        if by[BETTER]:
            parts.append(f"{_count(by[BETTER])} better than it on the seeds they share (it leads through its other seeds)")
        if by[ONE_SEED]:
            parts.append(f"{_count(by[ONE_SEED], 'shares', 'share')} fewer than 2 seeds with it (no test)")
        lines = ["; ".join(parts) + "."]
        if left_out:
            compared = len(self.of) - len(left_out)
            lines.append(
                f"not completed: {'; '.join(label(k) for k in left_out)}: a trial stopped early or unfinished gives an early "
                f"value (a smaller budget), so {'it is' if len(left_out) == 1 else 'they are'} left out of the verdict, "
                f"which compares only the {compared} configuration{'s' if compared != 1 else ''} with every value from a "
                "completed trial."
            )
        elif self.early_included:
            lines.append(
                "no configuration has only completed trials' values: the verdict compares them all, early values of trials "
                "stopped early or unfinished included, so it mixes budgets."
            )
        lines.append(METHOD)
        return lines


def verdicts(values: Mapping[Hashable, Mapping[Any, float]], mode: str, early: Collection[Hashable] = ()) -> Verdicts:
    """Pick the best configuration by mean (``mode`` max or min) and judge every other one against it, paired by seed.

    ``values``: per configuration, its final value by seed (configurations without one are left out). ``early``: the
    configurations with a value from a trial that did not complete (ASHA stopped it, or it still runs): such a value
    is from fewer epochs, so while any configuration has only completed values, the early ones are not compared
    (``not completed``); when none has, all are, and ``early_included`` says so.

    Labels: ``worse`` (the paired difference's p < 0.05, the best ahead), ``not resolved`` (no such evidence: at
    this noise the seeds cannot tell it from the best), ``better on shared seeds`` (p < 0.05 the other way: the best
    leads only through seeds the other did not run), ``one seed`` (fewer than 2 shared seeds: no test).
    """
    scored, compared, best, best_mean = _best(values, mode, early)
    of: dict[Hashable, Verdict] = {k: Verdict(NOT_COMPLETED, None, None) for k in scored if k not in compared}
    if best is None:
        return Verdicts(None, math.nan, of, False)
    for key in compared:
        if key == best:
            of[key] = Verdict(BEST, None, None)
            continue
        diff = paired_difference(scored[key], scored[best])
        behind = diff.mean < 0 if mode == "max" else diff.mean > 0
        if diff.n < 2:
            label = ONE_SEED
        elif diff.p < ALPHA:
            label = WORSE if behind else BETTER
        else:
            label = NOT_RESOLVED
        of[key] = Verdict(label, diff, seeds_needed(diff.diffs))
    return Verdicts(best, best_mean, {k: of[k] for k in scored}, all(k in early for k in scored))


def best_configuration(values: Mapping[Hashable, Mapping[Any, float]], mode: str, early: Collection[Hashable] = ()) -> Hashable | None:
    """The configuration a search reports as best: the best mean over seeds among the configurations whose every value
    comes from a completed trial, or among all when none is complete (``verdicts``' best; the simulator's too)."""
    return _best(values, mode, early)[2]


def _best(
    values: Mapping[Hashable, Mapping[Any, float]], mode: str, early: Collection[Hashable]
) -> tuple[dict[Hashable, Mapping[Any, float]], list[Hashable], Hashable | None, float]:
    scored = {k: v for k, v in values.items() if v}
    compared = [k for k in scored if k not in early] or list(scored)
    means = [mean_std(list(scored[k].values()))[0] for k in compared]
    place = best_index(means, mode)
    return scored, compared, (None if place is None else compared[place]), (math.nan if place is None else means[place])


def _count(keys: Sequence[Hashable], one: str = "is", many: str = "are") -> str:
    return f"1 configuration {one}" if len(keys) == 1 else f"{len(keys)} configurations {many}"
