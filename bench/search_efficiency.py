"""How well each way of searching finds the best configuration, replayed over the committed curves.

    python bench/search_efficiency.py                  # 20 repeats per strategy, 2 trials at a time
    python bench/search_efficiency.py --repeats 5 --json out.json --figure figures/search_efficiency.png

Every strategy searches the demo's space (``spaces/demo.yaml``: threshold, beta, the CNN's lr) with 3 seeds, as
``python -m search simulate`` does, over the curves of ``spaces/curves.yaml`` (``bench/curves/``: 12 recorded
configurations x 3 seeds, every trial to its last epoch); proposals map to the nearest recorded configuration
(the demo's beta 0.5 to the recorded 0). The strategies, each with the demo's 8 configurations unless said:

- grid: every recorded configuration, no early stopping (the reference: all the grid's epochs);
- random: 8 configurations at random (Optuna with every trial a startup trial), no stopping;
- random + ASHA: the same under the demo's ASHA (grace 2, reduction 2), each seed judged alone;
- TPE + ASHA: the demo's searcher and scheduler (TPE after 4 random configurations), each seed judged alone;
- TPE + seed-aware ASHA: the same with ``seeds: together``;
- halving (reproducible): synchronous successive halving (grace 2, reduction 2) over 8 configurations, which
  are all proposed before any result (so TPE draws them at random), seeds together.

``--sweep`` instead replays TPE + ASHA, each seed alone and seeds together, over 6-16 configurations, grace 1, 2,
4 and reduction 2, 3, 4, on the demo's space and on the recorded values as choices: one line per setting.

The last line is ``hit_rate H epochs_share E seedaware_hit S seedaware_epochs F``: TPE + ASHA's share of repeats
whose reported configuration is within 1 point of the true best and its epochs as a share of the grid's, then
the same for seed-aware ASHA.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.simulate import Curves, figure, repeat, report, write_json  # noqa: E402
from search.space import Space, load  # noqa: E402

ASHA = {"type": "asha", "grace_period": 2, "reduction_factor": 2}


def strategies(demo: dict[str, Any], curves: Curves) -> dict[str, dict[str, Any]]:
    """Each strategy as changes to the demo's space file."""
    samples = demo["num_samples"]
    grid = {name: {"grid": sorted({key[i] for key in curves.configs})} for i, name in enumerate(curves.names)}
    random = {"type": "optuna", "seed": 0, "startup_trials": samples}
    return {
        "grid": {"space": grid, "search": {"type": "grid"}, "scheduler": {"type": "none"}, "num_samples": 1},
        "random": {"search": random, "scheduler": {"type": "none"}},
        "random + ASHA": {"search": random, "scheduler": ASHA},
        "TPE + ASHA": {"scheduler": demo["scheduler"]},
        "TPE + seed-aware ASHA": {"scheduler": {**demo["scheduler"], "seeds": "together"}},
        "halving (reproducible)": {"scheduler": {**demo["scheduler"], "type": "halving"}},
    }


def space_for(demo: dict[str, Any], changes: dict[str, Any], folder: Path, name: str) -> Space:
    raw = copy.deepcopy(demo)
    raw.update(changes)
    raw["seeds"] = 3
    raw["name"] = name.replace(" ", "").replace("+", "-").replace("(", "").replace(")", "")
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load(path)


def sweep(demo: dict[str, Any], curves: Curves, repeats: int, concurrency: int, folder: Path) -> None:
    """TPE + ASHA over settings, on the demo's space and on the recorded values as choices (see the docstring)."""
    choices = {name: {"choice": sorted({key[i] for key in curves.configs})} for i, name in enumerate(curves.names)}
    spaces = {"demo": (demo["space"], (8, 12, 16)), "choices": (choices, (6, 8))}
    for (label, (space, sizes)), grace, rf, seeds in itertools.product(spaces.items(), (1, 2, 4), (2, 3, 4), ("apart", "together")):
        for n in sizes:
            changes = {"space": space, "num_samples": n,
                       "scheduler": {"type": "asha", "grace_period": grace, "reduction_factor": rf, "seeds": seeds}}  # fmt: skip
            d = repeat("sweep", space_for(demo, changes, folder, "sweep"), curves, repeats, concurrency, progress=False).as_dict()
            print(f"{label:7s} n={n:<2d} grace={grace} rf={rf} {seeds:8s} hit={d['hit_rate']:.2f} regret={d['regret_mean']:.2f} "
                  f"epochs={d['epochs_share']:.3f} minutes={d['wall_s'] / 60:.1f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", default=str(ROOT / "bench" / "curves"), help="STORE[:SEARCH] of recorded curves")
    parser.add_argument("--space", default=str(ROOT / "spaces" / "demo.yaml"), help="the space whose settings the strategies vary")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", help="write the numbers as JSON")
    parser.add_argument("--figure", default="figures/search_efficiency.png")
    parser.add_argument("--sweep", action="store_true", help="TPE + ASHA over settings instead (a few minutes)")
    args = parser.parse_args()

    demo = yaml.safe_load(Path(args.space).read_text())
    curves = Curves.load(args.curves, demo.get("metric", "top1"))
    started = time.perf_counter()
    if args.sweep:
        with tempfile.TemporaryDirectory() as folder:
            sweep(demo, curves, args.repeats, args.concurrency, Path(folder))
        print(f"in {time.perf_counter() - started:.0f} s")
        return
    summaries = []
    with tempfile.TemporaryDirectory() as folder:
        spaces = {name: space_for(demo, changes, Path(folder), name) for name, changes in strategies(demo, curves).items()}
        for name, space in spaces.items():
            summaries.append(repeat(name, space, curves, args.repeats, args.concurrency))
    print(f"{args.repeats} repeats per strategy, {args.concurrency} trials at a time, in {time.perf_counter() - started:.1f} s")
    print(report(summaries, curves, spaces["TPE + ASHA"]))
    print(f"figure: {figure(summaries, args.figure)}")
    if args.json:
        write_json(summaries, curves, args.json)
        print(f"json: {args.json}")
    by_name = {s.name: s for s in summaries}
    tpe, aware = by_name["TPE + ASHA"], by_name["TPE + seed-aware ASHA"]
    print(f"hit_rate {tpe.hit_rate:.2f} epochs_share {tpe.epochs_share:.3f} seedaware_hit {aware.hit_rate:.2f} seedaware_epochs {aware.epochs_share:.3f}")


if __name__ == "__main__":
    main()
