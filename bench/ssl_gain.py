"""Does semi-supervised training beat supervised-only here, in the paper's order? Its Table 1 at toy scale, on CPU.

Trains every method in ``--methods`` for every seed with the paper's pairing at CPU size on the synthetic
dataset, each run in its own single-threaded process (two at a time on two cores beat one run on two
threads). A run's **score** is its primary's test top-1 averaged over the last ``--score-epochs`` epochs. The
tables give each method's score (mean ± std over seeds, 95 % interval) with the pseudo-label mask rate and
accuracy, then each step of the paper's order as a paired-by-seed gain with its 95 % interval, paired t-test
and verdict: "holds", "reversed" or "not resolved at this noise" (``results.stats``, as the ``results`` commands).
A seed picks both the labeled subset and the training's randomness; pairing by seed removes what it does to both.

    python bench/ssl_gain.py --runs bench-runs                          # supervised vs the full method, seeds 0-4
    python bench/ssl_gain.py --runs bench-runs --noise                  # and where the seed-to-seed spread comes from
    python bench/ssl_gain.py --methods all --runs bench-runs            # the paper's Table 1 (every method)
    python bench/ssl_gain.py --seeds 11,12,13,14,15 --json gains.json   # other seeds; scores and gains as JSON
    python bench/ssl_gain.py --methods actnetformer_b0,actnetformer --scene-bias 0,0.25,0.5,0.75 --runs bench-runs
    python bench/ssl_gain.py --methods supervised,timebalance --set synthetic_classes=12 --runs bench-runs

``--noise`` also trains, for every method, the first seed's labeled subset with every seed's training randomness
(``labeled_seed`` fixed) and the first seed's randomness on every seed's subset, and splits the variance of a score
and of the paired gain into the evaluation sample (binomial, from the test set's size), the training seed with
the labeled subset fixed, and the labeled subset (see ``noise_table``).

TimeBalance's row also prints its temporal similarity ``s`` per class (the mean over a class's training videos
of the score that mixes its two teachers), with each synthetic class's kind of motion: 12 classes include the
two made of two sub-motions. Its teachers are stage results under ``--runs DIR``/stages, reused by a rerun.

With ``--runs DIR`` every finished run is a file there, named by its variant, seeds and config hash: an
interrupted benchmark started again trains only what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from trainable.config import identity_names, renamed

# The benchmark's base config: the paper's pairing at CPU size (``scale: tiny`` builds every backbone small and
# sets 32-pixel inputs, 8-frame clips and one test view), on a synthetic set with scene bias (README, "The
# synthetic benchmark", for how each value was chosen). Every method gets the same steps.
BASE: dict[str, Any] = {
    "dataset": "synthetic",
    "scale": "tiny",
    "synthetic_classes": 10,
    "synthetic_train_per_class": 60,
    "synthetic_test_per_class": 50,  # 500 test videos: a score's binomial sd 2.0 points at 70 %, not 3.2 (README)
    "synthetic_scene_bias": 0.75,
    "primary_backbone": "resnet3d_50",
    "labeled_per_class": 5,
    "batch_size": 4,
    "mu": 5,
    "optimizer": "sgd",
    "lr": 0.05,
    "warmup_epochs": 1,
    "weight_decay": 1e-3,
    "epochs": 24,
    "steps_per_epoch": 25,
}

# The tiny TimeSformer does not learn from few labels with SGD (README): it gets AdamW, labelled as a deviation.
TRANSFORMER_ADAMW: dict[str, Any] = {"aux_optimizer": "adamw", "aux_lr": 1e-3, "aux_weight_decay": 0.05}

# The unlabeled terms (γ, β) ramped in over the first 6 epochs, for the methods that have them (README).
RAMP: dict[str, Any] = {"unsup_warmup_epochs": 6}

# A variant is a method plus the settings that define its row of the paper's Table 1 (and two calibration rows:
# the transformer trained alone, with each optimizer).
VARIANTS: dict[str, dict[str, Any]] = {
    "supervised": {"method": "supervised"},
    "fixmatch": {"method": "fixmatch", **RAMP},
    "cmpl": {"method": "cmpl", "aux_backbone": "resnet3d_18", **RAMP},
    "actnetformer_b0": {"method": "actnetformer", "aux_backbone": "timesformer_s", "beta": 0.0, **TRANSFORMER_ADAMW, **RAMP},
    "actnetformer": {"method": "actnetformer", "aux_backbone": "timesformer_s", "beta": 2.0, **TRANSFORMER_ADAMW, **RAMP},
    # TimeBalance: its student with the paper's Adam at 1e-3; every stage as long as the others' training.
    "timebalance": {"method": "timebalance", "lr": 1e-3, "weight_decay": 0.0},
    "vit_alone_sgd": {"method": "supervised", "primary_backbone": "timesformer_s"},
    "vit_alone_adamw": {
        "method": "supervised", "primary_backbone": "timesformer_s", "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05,
    },
}  # fmt: skip
TABLE_1 = ["supervised", "fixmatch", "cmpl", "actnetformer_b0", "actnetformer"]
# The default run: the headline claim, supervised-only < the full method, on 5 seeds in under an hour on 2 cores.
DEFAULT_METHODS = ["supervised", "actnetformer"]
SCORE_EPOCHS = 3


def _train(job: tuple[str, int, dict[str, Any], Path | None]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from trainable.loop import run_local

    variant, seed, config, path = job
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    stage_root = str(path.parent / "stages") if path is not None else None
    session = run_local({**config, "seed": seed}, on_report=history.append, stage_root=stage_root)
    run = {"variant": variant, "seed": seed, "config": config, "wall_s": time.perf_counter() - started, "history": history}
    stages = session.stages.sink.stages
    if stages:  # a pipeline method: which stage results it used, their epochs, and TimeBalance's s per class
        run.update(stages=stages, stage_epochs=session.stages.sink.epochs)
        tuned = Path(next(s["path"] for s in stages if s["stage"] == "finetune_teachers")) / "similarity.json"
        run["similarity_by_class"] = json.loads(tuned.read_text())["by_class"]
    if path is not None:  # written whole, then renamed: a killed benchmark leaves no half file to skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(run, default=str))
        os.replace(tmp, path)
    return run


def run_file(folder: Path, variant: str, seed: int, config: dict[str, Any]) -> Path:
    """Where one run's result lives: named by its variant, seeds and a hash of its whole config, so a changed
    config is a new run and an unchanged one is never trained twice."""
    # Named as before the keys' rename (``identity_names``; ``-split<n>`` for the labeled seed), so that runs
    # recorded then are found.
    digest = hashlib.sha256(json.dumps(identity_names(config), sort_keys=True).encode()).hexdigest()[:10]
    subset = f"-split{config['labeled_seed']}" if "labeled_seed" in config else ""
    return folder / f"{variant}-seed{seed}{subset}-{digest}.json"


def parse_seeds(text: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; ``11,12,13`` means those seeds."""
    try:
        if "," not in text:
            return list(range(int(text)))
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--seeds takes a count (5) or a list (11,12,13), got {text!r}") from None


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set takes key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def _fmt(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v * scale for v in values if not math.isnan(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _config(base: dict[str, Any], variant: str, bias: float, seed: int, subset: int) -> dict[str, Any]:
    """A run's config; ``labeled_seed`` only where the labeled subset is not the seed's own (the default's runs)."""
    config = {**base, "synthetic_scene_bias": bias, **VARIANTS[variant]}
    return config if subset == seed else {**config, "labeled_seed": subset}


def plan(variants: list[str], seeds: list[int], biases: list[float], noise: bool) -> list[tuple[str, int, int, float]]:
    """Every (variant, seed, labeled subset's seed, scene bias) to train: each seed on its own subset, and with
    ``noise`` the first seed's subset under every seed's training and the first seed's training on every seed's
    subset."""
    pairs = [(s, s) for s in seeds]
    if noise:
        pairs += [(s, seeds[0]) for s in seeds[1:]] + [(seeds[0], s) for s in seeds[1:]]
    return [(v, seed, subset, bias) for bias in biases for seed, subset in pairs for v in variants]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"'all' (the paper's Table 1) or any of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="5", help="a count (5: seeds 0-4) or a list (11,12,13)")
    parser.add_argument(
        "--scene-bias", help="run every method at each of these synthetic_scene_bias values (0,0.25,0.5,0.75) and "
        "print the beta effect against them; default: the base config's only",
    )  # fmt: skip
    parser.add_argument("--score-epochs", type=int, default=SCORE_EPOCHS, help="a run's score: the mean test top-1 of its last N epochs")
    parser.add_argument("--noise", action="store_true", help="also train the runs that split the seed spread into its sources")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config")
    parser.add_argument("--out", type=Path, help="also write every run's per-epoch metrics as JSON")
    parser.add_argument("--json", type=Path, help="write every run's score and every paired gain with its verdict as JSON")
    parser.add_argument("--runs", type=Path, help="keep one file per run here and skip runs already there (resumable)")
    parser.add_argument("--tables-only", action="store_true", help="print the tables of the runs in --runs; train none")
    args = parser.parse_args(argv)
    if args.tables_only and not args.runs:
        raise SystemExit("--tables-only reads the runs of --runs DIR")
    if args.score_epochs < 1:
        raise SystemExit(f"--score-epochs takes a count of epochs ≥ 1, got {args.score_epochs}")

    variants = TABLE_1 if args.methods == "all" else args.methods.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown method {unknown}; allowed: all, {', '.join(VARIANTS)}")
    base = {**BASE, **_parse_sets(args.set)}
    args.score_epochs = min(args.score_epochs, base["epochs"])  # a quick look of fewer epochs scores what it has
    biases = [float(b) for b in args.scene_bias.split(",")] if args.scene_bias else [base["synthetic_scene_bias"]]
    seeds = parse_seeds(args.seeds)
    if not seeds:
        raise SystemExit("--seeds names no seed")
    runs, jobs = [], []
    if args.runs:
        args.runs.mkdir(parents=True, exist_ok=True)
    for v, seed, subset, bias in plan(variants, seeds, biases, args.noise):
        config = _config(base, v, bias, seed, subset)
        path = run_file(args.runs, v, seed, config) if args.runs else None
        if path is not None and path.exists():
            runs.append(json.loads(path.read_text()))
        else:
            jobs.append((v, seed, config, path))
    if args.tables_only:
        jobs = []
    print(f"{len(jobs)} runs to train ({len(runs)} found in {args.runs}), {args.jobs} at a time; "
          f"base config: {json.dumps(base)}", flush=True)  # fmt: skip

    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        for done, run in enumerate(pool.imap_unordered(_train, jobs), 1):
            print(
                f"  [{done}/{len(jobs)}] {run['variant']:>16} seed {run['seed']} subset {subset_of(run)} scene bias "
                f"{run['config']['synthetic_scene_bias']}: score {score(run, args.score_epochs):.1f}  final top1 "
                f"{run['history'][-1]['top1']:.1f}  aux_top1 {run['history'][-1]['aux_top1']:.1f}  ({run['wall_s']:.0f} s, "
                f"{time.perf_counter() - started:.0f} s in)",
                flush=True,
            )  # fmt: skip
            runs.append(run)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"base": base, "runs": runs}, indent=1, default=str))

    at_base = [r for r in runs if r["config"]["synthetic_scene_bias"] == biases[0]]
    own = [r for r in at_base if subset_of(r) == r["seed"]]  # each seed on its own labeled subset
    scores = {(r["variant"], r["seed"]): score(r, args.score_epochs) for r in own}
    print(f"\n{table(own, variants, {**base, 'synthetic_scene_bias': biases[0]}, args.score_epochs)}")
    steps = order_steps(variants)
    if steps:
        print(f"\n{ordering(scores, steps)}")
    noise = None
    if args.noise:
        noise = variance_sources(at_base, variants, seeds[0], args.score_epochs)
        print(f"\n{noise_table(noise, variants, seeds[0])}")
    if len(biases) > 1:
        print(f"\n{beta_table(runs, sorted(biases), args.score_epochs)}")
    if any("similarity_by_class" in r for r in own):
        print(f"\n{similarity_table(own)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result_json(own, scores, steps, base, args.score_epochs, noise), indent=1))
    print(f"\nwall {time.perf_counter() - started:.0f} s")


def subset_of(run: dict[str, Any]) -> int:
    """The seed of a run's labeled subset: its own seed unless ``labeled_seed`` fixed another (``split_seed`` in a
    run recorded before the rename)."""
    return renamed(run["config"])[0].get("labeled_seed", run["seed"])


def score(run: dict[str, Any], epochs: int) -> float:
    """A run's score: its primary's test top-1 averaged over its last ``epochs`` epochs. The last epoch alone adds the
    epoch-to-epoch wobble of a model still moving; at the end of the cosine schedule the last few are the same model
    seen a few times, so their mean is the steadier figure at no cost."""
    tail = [row["top1"] for row in run["history"][-epochs:]]
    return sum(tail) / len(tail)


def _markdown(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def _by_seed(scores: dict[tuple[str, int], float], variant: str) -> dict[int, float]:
    return {seed: value for (v, seed), value in sorted(scores.items()) if v == variant}


def order_steps(variants: list[str]) -> list[tuple[str, str]]:
    """The steps of the paper's Table 1 order among ``variants`` as (better, worse), and the full method over
    supervised-only, the benchmark's headline."""
    steps = [v for v in TABLE_1 if v in variants]
    pairs = list(zip(steps[1:], steps[:-1]))
    if "supervised" in steps and "actnetformer" in steps and ("actnetformer", "supervised") not in pairs:
        pairs.append(("actnetformer", "supervised"))
    return pairs


def _gain_cells(diff: Any) -> list[str]:
    """A ``results.stats.Difference`` as the order table's cells: mean, interval, p, the gain per seed."""
    from results import stats

    return [
        f"{diff.mean:+.1f}", stats.interval_text(diff.low, diff.high, 1), stats.p_text(diff.p),
        " / ".join(f"{d:+.1f}" for d in diff.diffs),
    ]  # fmt: skip


def ordering(scores: dict[tuple[str, int], float], steps: list[tuple[str, str]]) -> str:
    """Each step of the paper's order: the paired gain over the seeds, its 95 % t interval, the paired t-test, the
    verdict (``results.stats.claim_verdict``) and how many seeds would resolve a gain of this size and spread."""
    from results import stats

    rows = [["paper's order", "paired gain", "95% CI", "p", "per seed", "verdict", "seeds needed"]]
    for better, worse in steps:
        diff = stats.paired_difference(_by_seed(scores, better), _by_seed(scores, worse))
        verdict = stats.claim_verdict(diff)
        rows.append([f"{worse} < {better}", *_gain_cells(diff), verdict, stats.seeds_text(stats.seeds_needed(diff.diffs))])
    seeds = len({seed for _, seed in scores})
    return "\n".join([
        f"each step of supervised < FixMatch ≤ CMPL ≤ ActNetFormer β0 ≤ β2: score gain in top-1 points, paired over {seeds} "
        "seeds; holds / reversed: the 95 % interval excludes 0", *_markdown(rows),
    ])  # fmt: skip


def _binomial_var(run: dict[str, Any], epochs: int) -> float:
    """The evaluation sample's share of a score's variance: a model right on a fraction p of the test videos scores
    p with a binomial variance p(1 − p) / n over test sets of n videos (points²). Averaging epochs of one model does not
    shrink it: they are judged on the same videos."""
    cfg = run["config"]
    n = cfg["synthetic_classes"] * cfg["synthetic_test_per_class"]
    p = score(run, epochs) / 100
    return 1e4 * p * (1 - p) / n


def variance_sources(runs: list[dict[str, Any]], variants: list[str], first: int, epochs: int) -> dict[str, dict[str, Any]]:
    """Where the seed-to-seed variance of each method's score, and of each method's paired gain over the first
    method, comes from (points², the sample variance over seeds):

    - ``evaluation``: the binomial variance of one score on the test set's n videos (for a gain, the two methods'
      sum: the most it can be, were their errors on the test videos independent; shared hard videos make it less);
    - ``training``: the spread over training seeds on the first seed's labeled subset, less the evaluation part;
    - ``subset``: the spread over labeled subsets under the first seed's training, less the training spread (a new
      subset also reshuffles the training, so its spread holds both);
    - ``total``: the spread of the default's runs, each seed on its own subset (what the ordering's intervals see);
    - ``unexplained``: the total less the three: how training and subset interact, and the estimates' own noise.
    """
    by = {(r["variant"], r["seed"], subset_of(r)): r for r in runs}
    seeds = sorted({s for _, s, k in by if k == first} | {k for _, s, k in by if s == first})

    def group(values: dict[int, float]) -> tuple[float, int]:
        return (statistics.variance(values.values()) if len(values) > 1 else math.nan), len(values)

    def sources(value: "Callable[[int, int], float | None]", evaluation: "Callable[[int, int], float | None]") -> dict[str, Any]:
        cells = {"training": {s: value(s, first) for s in seeds}, "subset": {k: value(first, k) for k in seeds},
                 "total": {s: value(s, s) for s in seeds}}  # fmt: skip
        cells = {name: {k: v for k, v in cell.items() if v is not None} for name, cell in cells.items()}
        (train, n_train), (subset, n_subset), (total, n_total) = (group(cells[n]) for n in ("training", "subset", "total"))
        evals = [e for s in seeds for e in (evaluation(s, first), evaluation(first, s), evaluation(s, s)) if e is not None]
        ev = statistics.mean(evals) if evals else math.nan
        parts = {"evaluation": ev, "training": train - ev, "subset": subset - train}
        return {**parts, "unexplained": total - sum(parts.values()), "total": total,
                "runs": {"training": n_train, "subset": n_subset, "total": n_total}, "values": cells}  # fmt: skip

    def one(v: str) -> Callable[[int, int], float | None]:
        return lambda s, k: score(by[v, s, k], epochs) if (v, s, k) in by else None

    def one_eval(v: str) -> Callable[[int, int], float | None]:
        return lambda s, k: _binomial_var(by[v, s, k], epochs) if (v, s, k) in by else None

    def gain(v: str, ref: str, pick: Callable[[str], Callable[[int, int], float | None]], combine: Callable[[float, float], float]):
        a, b = pick(v), pick(ref)
        return lambda s, k: None if a(s, k) is None or b(s, k) is None else combine(a(s, k), b(s, k))

    out = {v: sources(one(v), one_eval(v)) for v in variants}
    for v in variants[1:]:
        out[f"{v} − {variants[0]}"] = sources(gain(v, variants[0], one, lambda x, y: x - y),
                                              gain(v, variants[0], one_eval, lambda x, y: x + y))  # fmt: skip
    return out


NOISE_ROWS = {
    "evaluation": "evaluation sample (binomial, the test set's n videos)",
    "training": "training seed, labeled subset fixed",
    "subset": "labeled subset, training seed fixed",
    "unexplained": "not explained by the three (interaction, estimates' noise)",
    "total": "all of it: each seed on its own subset",
}


def noise_table(noise: dict[str, dict[str, Any]], variants: list[str], first: int) -> str:
    """The variance decomposition of ``variance_sources`` as standard deviations in top-1 points, with each source's
    share of the total. A source's variance is a difference of two sample variances over a few seeds, so it can come
    out below 0: that source is then lost in the others' noise, shown as ``≈0``."""
    columns = list(noise)
    rows = [["source of the seed-to-seed spread", *[f"{c} sd (share)" for c in columns]]]
    for key, label in NOISE_ROWS.items():
        cells = []
        for c in columns:
            var, total = noise[c][key], noise[c]["total"]
            if math.isnan(var):
                cells.append("—")
            elif var <= 0:
                cells.append("≈0" if key != "unexplained" else f"−{math.sqrt(-var):.1f}²")
            else:
                share = "" if key == "total" or not total > 0 else f" ({100 * var / total:.0f} %)"
                cells.append(f"{math.sqrt(var):.1f}{share}")
        rows.append([label, *cells])
    counts = noise[columns[0]]["runs"]
    from scipy import stats

    n = counts["total"]
    low, high = ((n - 1) / stats.chi2.ppf(q, n - 1) for q in (0.975, 0.025)) if n > 1 else (math.nan, math.nan)
    return "\n".join([
        f"where the score's spread comes from, sd in top-1 points (variance share of the total): {counts['training']} "
        f"training seeds on seed {first}'s labeled subset, {counts['subset']} subsets under seed {first}'s training, "
        f"{counts['total']} seeds on their own subsets", *_markdown(rows),
        f"a variance from {n} runs is itself uncertain: its 95 % interval spans {low:.2f}× to {high:.1f}× the estimate "
        f"(χ², {n - 1} degrees of freedom), so shares within that factor of each other are not told apart",
    ])  # fmt: skip


def result_json(runs: list[dict[str, Any]], scores: dict[tuple[str, int], float], steps: list[tuple[str, str]],
                base: dict[str, Any], epochs: int, noise: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """What a script checks a run of the benchmark by: each run's score, each step's paired gains and verdict."""
    from results import stats

    gains = []
    for better, worse in steps:
        diff = stats.paired_difference(_by_seed(scores, better), _by_seed(scores, worse))
        seeds = [s for s in _by_seed(scores, better) if s in _by_seed(scores, worse)]
        gains.append({
            "better": better, "worse": worse, "by_seed": {str(s): d for s, d in zip(seeds, diff.diffs)},
            "mean": _number(diff.mean), "ci95": [_number(diff.low), _number(diff.high)], "p": _number(diff.p),
            "verdict": stats.claim_verdict(diff),
        })  # fmt: skip
    return {
        "base": base,
        "score": f"mean test top-1 (%) of the primary over the last {epochs} epochs",
        "runs": [{"method": r["variant"], "seed": r["seed"], "score": scores[r["variant"], r["seed"]],
                  "final_top1": r["history"][-1]["top1"], "wall_s": r["wall_s"]} for r in runs],  # fmt: skip
        "gains": gains,
        **({"noise": {k: {s: v[s] if s == "runs" else _number(v[s]) for s in (*NOISE_ROWS, "runs")} for k, v in noise.items()}} if noise else {}),
    }


def _number(value: float) -> float | None:
    """NaN (one seed: no interval) as JSON's null, which every reader parses; ``NaN`` is not JSON."""
    return None if math.isnan(value) else value


def beta_table(runs: list[dict[str, Any]], biases: list[float], epochs: int) -> str:
    """The contrastive term's effect (beta 2 against beta 0, paired by seed) at each scene bias."""
    from results import stats

    rows = [["scene bias", "β = 0 score", "β = 2 score", "β2 − β0", "95% CI", "verdict", "β = 0 aux_top1", "β = 2 aux_top1"]]
    for bias in biases:
        mine = [r for r in runs if r["config"]["synthetic_scene_bias"] == bias and subset_of(r) == r["seed"]]
        scores = {(r["variant"], r["seed"]): score(r, epochs) for r in mine}
        aux = {(r["variant"], r["seed"]): r["history"][-1]["aux_top1"] for r in mine}
        diff = stats.paired_difference(_by_seed(scores, "actnetformer"), _by_seed(scores, "actnetformer_b0"))
        rows.append([
            f"{bias:g}", _fmt(list(_by_seed(scores, "actnetformer_b0").values())),
            _fmt(list(_by_seed(scores, "actnetformer").values())), f"{diff.mean:+.1f}" if diff.n else "—",
            stats.interval_text(diff.low, diff.high, 1), stats.claim_verdict(diff),
            _fmt(list(_by_seed(aux, "actnetformer_b0").values())), _fmt(list(_by_seed(aux, "actnetformer").values())),
        ])  # fmt: skip
    return "\n".join(["ActNetFormer primary score against the synthetic set's scene bias; β2 − β0 paired by seed", *_markdown(rows)])


def similarity_table(runs: list[dict[str, Any]]) -> str:
    """TimeBalance's ``s`` per class (mean over the class's training videos, then mean ± std over seeds) beside the
    class's kind of motion: the paper's Fig. 4 finds it high for repetitive actions and low for ones in parts."""
    from trainable.data.synthetic import MOTION_KINDS

    by_class: dict[str, list[float]] = {}
    for run in runs:
        for name, s in run.get("similarity_by_class", {}).items():
            by_class.setdefault(name, []).append(s)
    rows = [["class", "motion", "s"]]
    for name, values in sorted(by_class.items(), key=lambda item: -statistics.mean(item[1])):
        rows.append([name, MOTION_KINDS.get(name, "?"), _fmt(values, 1.0, digits=3)])
    kinds: dict[str, list[float]] = {}
    for name, values in by_class.items():
        kinds.setdefault(MOTION_KINDS.get(name, "?"), []).append(statistics.mean(values))
    summary = "; ".join(f"{kind} {statistics.mean(v):.3f}" for kind, v in sorted(kinds.items(), key=lambda kv: -statistics.mean(kv[1])))
    seeds = len({r["seed"] for r in runs if "similarity_by_class" in r})
    return "\n".join([f"TimeBalance's temporal similarity s per class, mean ± std over {seeds} seeds (1: the teachers see one "
                      f"look over time; mixes toward the invariant teacher)", *_markdown(rows), f"mean by kind: {summary}"])  # fmt: skip


def table(runs: list[dict[str, Any]], variants: list[str], base: dict[str, Any], epochs: int) -> str:
    """Score and pseudo-label figures per method, mean ± std over seeds, as a Markdown table.

    ``gain`` is the paired difference to supervised-only on the same seed, hence the same labeled videos:
    the seed spread of a score is partly which videos were labeled, which the pairing removes.
    """
    from results import stats

    final = {(r["variant"], r["seed"]): r["history"][-1] for r in runs}
    scores = {(r["variant"], r["seed"]): score(r, epochs) for r in runs}
    seeds = sorted({seed for _, seed in final})
    # The pseudo-label figures are fractions in the metrics, percentages in the table.
    scales = {"aux_top1": 1.0, "mask_rate_primary": 100.0, "pl_acc_primary": 100.0, "mask_rate_aux": 100.0, "pl_acc_aux": 100.0}
    rows = [["method", "score", "95% CI", "gain", "gain 95% CI", *scales]]
    for v in variants:
        mine = [final[v, s] for s in seeds if (v, s) in final]
        values = list(_by_seed(scores, v).values())
        _, low, high = stats.mean_ci(values) if values else (math.nan, math.nan, math.nan)
        diff = stats.paired_difference(_by_seed(scores, v), _by_seed(scores, "supervised"))
        gain = v != "supervised" and diff.n > 0
        rows.append([
            v, _fmt(values), stats.interval_text(low, high, 1), _fmt(list(diff.diffs)) if gain else "—",
            stats.interval_text(diff.low, diff.high, 1) if gain else "",
            *[_fmt([m[key] for m in mine], scale) for key, scale in scales.items()],
        ])  # fmt: skip
    chance = 100 / base["synthetic_classes"]
    n_test = base["synthetic_classes"] * base["synthetic_test_per_class"]
    title = (
        f"score: primary test top-1 % averaged over the last {epochs} of {base['epochs']} epochs, mean ± std over "
        f"{len(seeds)} seeds ({base['labeled_per_class']} labeled per class, {n_test} test videos, scene bias "
        f"{base['synthetic_scene_bias']:g}, chance {chance:.0f} %); gain: paired, over supervised"
    )
    return "\n".join([title, *_markdown(rows)])


if __name__ == "__main__":
    sys.exit(main())
