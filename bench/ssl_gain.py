"""Does semi-supervised training beat supervised-only here, in the paper's order? Its Table 1 at toy scale, on CPU.

Trains every method in ``--methods`` for every seed with the paper's pairing at CPU size on the synthetic
dataset, each run in its own single-threaded process (two at a time on two cores beat one run on two
threads), and prints the primary's final top-1 (mean ± std over seeds) with the pseudo-label mask rate and
accuracy of the last epoch, then each step of the paper's order as a paired-by-seed gain. The labeled subset
changes with the seed, so the spread includes the choice of labels; the pairing removes it.

    python bench/ssl_gain.py --runs bench-runs                 # Table 1's methods, seeds 0-2 (README for its time)
    python bench/ssl_gain.py --seeds 11,12,13 --out runs.json  # other seeds; every run's history as JSON
    python bench/ssl_gain.py --methods actnetformer_b0,actnetformer --scene-bias 0,0.25,0.5,0.75 --runs bench-runs
    python bench/ssl_gain.py --seeds 1 --set epochs=3 --methods supervised,fixmatch    # a quick look
    python bench/ssl_gain.py --methods supervised,timebalance --set synthetic_classes=12 --runs bench-runs

TimeBalance's row also prints its temporal similarity ``s`` per class (the mean over a class's training videos
of the score that mixes its two teachers), with each synthetic class's kind of motion: 12 classes include the
two made of two sub-motions. Its teachers are stage results under ``--runs DIR``/stages, reused by a rerun.

With ``--runs DIR`` every finished run is a file there, named by its variant, seed and config hash: an
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
from typing import Any

import yaml

# The benchmark's base config: the paper's pairing at CPU size (``scale: tiny`` builds every backbone small and
# sets 32-pixel inputs, 8-frame clips and one test view), on a synthetic set with scene bias (README, "The
# synthetic benchmark", for how each value was chosen). Every method gets the same steps.
BASE: dict[str, Any] = {
    "dataset": "synthetic",
    "scale": "tiny",
    "synthetic_classes": 10,
    "synthetic_train_per_class": 60,
    "synthetic_test_per_class": 20,
    "synthetic_scene_bias": 0.75,
    "primary_backbone": "resnet3d_50",
    "labeled_per_class": 5,
    "batch_size": 4,
    "mu": 5,
    "optimizer": "sgd",
    "lr": 0.05,
    "warmup_epochs": 1,
    "weight_decay": 1e-3,
    "unsup_warmup_epochs": 6,
    "epochs": 24,
    "steps_per_epoch": 25,
}

# The tiny TimeSformer does not learn from few labels with SGD (README): it gets AdamW, labelled as a deviation.
TRANSFORMER_ADAMW: dict[str, Any] = {"aux_optimizer": "adamw", "aux_lr": 1e-3, "aux_weight_decay": 0.05}

# A variant is a method plus the settings that define its row of the paper's Table 1 (and two calibration rows:
# the transformer trained alone, with each optimizer).
VARIANTS: dict[str, dict[str, Any]] = {
    "supervised": {"method": "supervised"},
    "fixmatch": {"method": "fixmatch"},
    "cmpl": {"method": "cmpl", "aux_backbone": "resnet3d_18"},
    "actnetformer_b0": {"method": "actnetformer", "aux_backbone": "timesformer_s", "beta": 0.0, **TRANSFORMER_ADAMW},
    "actnetformer": {"method": "actnetformer", "aux_backbone": "timesformer_s", "beta": 2.0, **TRANSFORMER_ADAMW},
    # TimeBalance: its student with the paper's Adam at 1e-3; every stage as long as the others' training.
    "timebalance": {"method": "timebalance", "lr": 1e-3, "weight_decay": 0.0},
    "vit_alone_sgd": {"method": "supervised", "primary_backbone": "timesformer_s"},
    "vit_alone_adamw": {
        "method": "supervised", "primary_backbone": "timesformer_s", "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05,
    },
}  # fmt: skip
TABLE_1 = ["supervised", "fixmatch", "cmpl", "actnetformer_b0", "actnetformer"]


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
    stages = session.stage_sink.stages
    if stages:  # a pipeline method: which stage results it used, their epochs, and TimeBalance's s per class
        run.update(stages=stages, stage_epochs=session.stage_sink.epochs)
        tuned = Path(next(s["path"] for s in stages if s["stage"] == "finetune_teachers")) / "similarity.json"
        run["similarity_by_class"] = json.loads(tuned.read_text())["by_class"]
    if path is not None:  # written whole, then renamed: a killed benchmark leaves no half file to skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(run, default=str))
        os.replace(tmp, path)
    return run


def run_file(folder: Path, variant: str, seed: int, config: dict[str, Any]) -> Path:
    """Where one run's result lives: named by its variant, seed and a hash of its whole config, so a changed
    config is a new run and an unchanged one is never trained twice."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return folder / f"{variant}-seed{seed}-{digest}.json"


def parse_seeds(text: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; ``11,12,13`` means those seeds."""
    try:
        if "," not in text:
            return list(range(int(text)))
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--seeds takes a count (3) or a list (11,12,13), got {text!r}") from None


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(TABLE_1), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="3", help="a count (3: seeds 0, 1, 2) or a list (11,12,13)")
    parser.add_argument(
        "--scene-bias", help="run every method at each of these synthetic_scene_bias values (0,0.25,0.5,0.75) and "
        "print the beta effect against them; default: the base config's only",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config")
    parser.add_argument("--out", type=Path, help="also write every run's per-epoch metrics as JSON")
    parser.add_argument("--runs", type=Path, help="keep one file per run here and skip runs already there (resumable)")
    parser.add_argument("--tables-only", action="store_true", help="print the tables of the runs in --runs; train none")
    args = parser.parse_args(argv)
    if args.tables_only and not args.runs:
        raise SystemExit("--tables-only reads the runs of --runs DIR")

    variants = args.methods.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown method {unknown}; allowed: {', '.join(VARIANTS)}")
    base = {**BASE, **_parse_sets(args.set)}
    biases = [float(b) for b in args.scene_bias.split(",")] if args.scene_bias else [base["synthetic_scene_bias"]]
    runs, jobs = [], []
    if args.runs:
        args.runs.mkdir(parents=True, exist_ok=True)
    for bias in biases:
        for seed in parse_seeds(args.seeds):
            for v in variants:
                config = {**base, "synthetic_scene_bias": bias, **VARIANTS[v]}
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
        for run in pool.imap_unordered(_train, jobs):
            last = run["history"][-1]
            print(
                f"  {run['variant']:>16} seed {run['seed']} scene bias {run['config']['synthetic_scene_bias']}: "
                f"top1 {last['top1']:.1f}  aux_top1 {last['aux_top1']:.1f}  ({run['wall_s']:.0f} s)",
                flush=True,
            )
            runs.append(run)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"base": base, "runs": runs}, indent=1, default=str))

    at_base = [r for r in runs if r["config"]["synthetic_scene_bias"] == biases[0]]
    print(f"\n{table(at_base, variants, {**base, 'synthetic_scene_bias': biases[0]})}")
    if sum(v in TABLE_1 for v in variants) > 1:  # a step of the order needs two of its methods
        print(f"\n{ordering(at_base, variants)}")
    if len(biases) > 1:
        print(f"\n{beta_table(runs, sorted(biases))}")
    if any("similarity_by_class" in r for r in at_base):
        print(f"\n{similarity_table(at_base)}")
    print(f"\nwall {time.perf_counter() - started:.0f} s")


def _markdown(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def _final_top1(runs: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    return {(r["variant"], r["seed"]): r["history"][-1]["top1"] for r in runs}


def _paired(top1: dict[tuple[str, int], float], better: str, worse: str) -> list[float]:
    """``better`` minus ``worse`` on every seed both ran: the same labeled videos, so the split's luck cancels."""
    seeds = sorted({s for v, s in top1 if v == better} & {s for v, s in top1 if v == worse})
    return [top1[better, s] - top1[worse, s] for s in seeds]


def ordering(runs: list[dict[str, Any]], variants: list[str]) -> str:
    """The paper's Table 1 order, one step at a time: each step's paired gain and on how many seeds it holds."""
    top1 = _final_top1(runs)
    steps = [v for v in TABLE_1 if v in variants]
    pairs = list(zip(steps[1:], steps[:-1]))
    if "supervised" in steps and "actnetformer" in steps:
        pairs.append(("actnetformer", "supervised"))
    rows = [["paper's order", "paired gain", "holds on"]]
    for better, worse in pairs:
        gains = _paired(top1, better, worse)
        rows.append([f"{worse} ≤ {better}", _fmt(gains), f"{sum(g >= 0 for g in gains)}/{len(gains)} seeds"])
    return "\n".join(["each step of supervised < FixMatch ≤ CMPL ≤ ActNetFormer β0 ≤ β2, top-1 points", *_markdown(rows)])


def beta_table(runs: list[dict[str, Any]], biases: list[float]) -> str:
    """The contrastive term's effect (beta 2 against beta 0, paired by seed) at each scene bias."""
    rows = [["scene bias", "β = 0 top1", "β = 2 top1", "β2 − β0", "β2 ≥ β0 on", "β = 0 aux_top1", "β = 2 aux_top1"]]
    for bias in biases:
        mine = [r for r in runs if r["config"]["synthetic_scene_bias"] == bias]
        top1 = _final_top1(mine)
        aux = {(r["variant"], r["seed"]): r["history"][-1]["aux_top1"] for r in mine}
        gains = _paired(top1, "actnetformer", "actnetformer_b0")
        rows.append([
            f"{bias:g}", _fmt([t for (v, _), t in top1.items() if v == "actnetformer_b0"]),
            _fmt([t for (v, _), t in top1.items() if v == "actnetformer"]), _fmt(gains),
            f"{sum(g >= 0 for g in gains)}/{len(gains)} seeds",
            _fmt([t for (v, _), t in aux.items() if v == "actnetformer_b0"]), _fmt([t for (v, _), t in aux.items() if v == "actnetformer"]),
        ])  # fmt: skip
    return "\n".join(["ActNetFormer primary top-1 % against the synthetic set's scene bias; β2 − β0 paired by seed", *_markdown(rows)])


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


def table(runs: list[dict[str, Any]], variants: list[str], base: dict[str, Any]) -> str:
    """Final top-1 and pseudo-label figures per method, mean ± std over seeds, as a Markdown table.

    ``gain`` is the paired difference to supervised-only on the same seed, hence the same labeled videos:
    the seed spread of top-1 is mostly which videos were labeled, which the pairing removes.
    """
    final = {(r["variant"], r["seed"]): r["history"][-1] for r in runs}
    top1 = _final_top1(runs)
    seeds = sorted({seed for _, seed in final})
    # The pseudo-label figures are fractions in the metrics, percentages in the table.
    scales = {"aux_top1": 1.0, "mask_rate_primary": 100.0, "pl_acc_primary": 100.0, "mask_rate_aux": 100.0, "pl_acc_aux": 100.0}
    rows = [["method", "top1", "gain", *scales]]
    for v in variants:
        mine = [final[v, s] for s in seeds if (v, s) in final]
        gains = _paired(top1, v, "supervised")
        rows.append([
            v, _fmt([m["top1"] for m in mine]), _fmt(gains) if v != "supervised" else "—",
            *[_fmt([m[key] for m in mine], scale) for key, scale in scales.items()],
        ])  # fmt: skip
    chance = 100 / base["synthetic_classes"]
    title = (
        f"primary top-1 % after {base['epochs']} epochs, mean ± std over {len(seeds)} seeds "
        f"({base['labeled_per_class']} labeled per class, scene bias {base['synthetic_scene_bias']:g}, chance "
        f"{chance:.0f} %); gain: paired, over supervised"
    )
    return "\n".join([title, *_markdown(rows)])


if __name__ == "__main__":
    sys.exit(main())
