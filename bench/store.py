"""How the store's write path scales with a search's size, and how fast the tables read back afterwards.

Simulates a search of ``--trials`` × ``--epochs`` reports through the real write path, without Ray: each
report is what a trial's process appends (``EpochWriter.write``) plus what the driver's callback does with
it (``ResultsCallback.on_trial_result``, which compacts in the background every few thousand reports);
trials start and end through the callback too, ``--concurrent`` at a time, reporting in turns as Tune's
trials do. Then times ``python -m results show`` and ``table`` on the result, in fresh processes.

    python bench/store.py --trials 500 --epochs 40
    python bench/store.py --trials 50 --epochs 10 --store s3://bucket/bench   # the same against an S3 server

Goal (issue 9): ratio of the last 1 % to the first 1 % of reports ≤ 1.5, p99 ≤ 20 ms, ``table`` ≤ 2 s.
The last line is ``ratio R p99_ms P table_s T``, numbers only there.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.callback import ResultsCallback  # noqa: E402
from results.ledger import EpochWriter  # noqa: E402
from results.store import Store  # noqa: E402
from search.resume import Pins  # noqa: E402
from trainable.metrics import REPORTED  # noqa: E402


def simulate(store: Store, trials: int, epochs: int, concurrent: int) -> list[float]:
    """Run the fake search; return each report's write time in seconds, in report order."""
    search_id = "bench"
    callback = ResultsCallback(
        store,
        {"search_id": search_id, "name": "bench", "metric": "top1", "mode": "max", "status": "running"},
        earlier=[],
        pins=Pins(),
    )
    callback.setup()
    rng = random.Random(0)
    pending = [f"{i:08x}" for i in range(trials)]
    running: dict[str, SimpleNamespace] = {}
    times: list[float] = []
    while pending or running:
        while pending and len(running) < concurrent:
            trial_id = pending.pop(0)
            config = {"threshold": rng.uniform(0.5, 0.99), "lr": 10 ** rng.uniform(-4, -1), "seed": rng.randrange(3), "epochs": epochs}
            trial = SimpleNamespace(trial_id=trial_id, config=config, error_file=None, epoch=0)
            running[trial_id] = trial
            callback.on_trial_start(0, [], trial)
        for trial_id, trial in list(running.items()):
            trial.epoch += 1
            metrics = {k: rng.random() * 100 for k in REPORTED}
            metrics.update(epoch=trial.epoch, subset_hash="abc123", videos_missing=0, videos_skipped=0)
            writer = EpochWriter(store, search_id, trial_id, trial.config["seed"])
            started = time.perf_counter()
            writer.write(metrics, f"{store.uri}/train/bench/train-{trial_id}/checkpoint_{trial.epoch}")
            callback.on_trial_result(0, [], trial, {"epoch": trial.epoch, "top1": metrics["top1"]})
            times.append(time.perf_counter() - started)
            if trial.epoch == epochs:
                callback.on_trial_complete(0, [], trial)
                del running[trial_id]
    callback.finish("completed")
    return times


def timed(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "results", *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--concurrent", type=int, default=8, help="trials running at once (reports interleave)")
    parser.add_argument("--store", help="a folder, emptied first, or a URI such as s3://bucket/bench (an empty prefix; "
                        "the server from AWS_ENDPOINT_URL); default: a temporary folder, deleted afterwards")
    args = parser.parse_args()
    folder = args.store or tempfile.mkdtemp(prefix="bench-store-")
    if "://" not in folder:
        shutil.rmtree(folder, ignore_errors=True)
    store = Store(folder)
    try:
        started = time.perf_counter()
        times = simulate(store, args.trials, args.epochs, args.concurrent)
        total = time.perf_counter() - started
        n = len(times)
        edge = max(1, n // 100)
        first, last = sum(times[:edge]) / edge * 1000, sum(times[-edge:]) / edge * 1000
        p99 = sorted(times)[min(n - 1, math.ceil(0.99 * n) - 1)] * 1000
        files = {t: len(store.parts(t)) for t in ("searches", "trials", "epochs")}
        show_s = timed("show", "bench", "--store", store.uri)
        table_s = timed("table", "bench", "--metric", "top1", "--store", store.uri)
        startup_s = timed("--help")
        print(f"{args.trials} trials x {args.epochs} epochs = {n} reports, {args.concurrent} trials at a time, {total:.1f} s in all")
        print(f"write per report: first 1 % {first:.2f} ms, last 1 % {last:.2f} ms, p99 {p99:.2f} ms, max {max(times) * 1000:.1f} ms")
        print(f"files after the search's compaction: {files}")
        print(f"python -m results --help {startup_s:.2f} s, show {show_s:.2f} s, table {table_s:.2f} s")
        print(f"ratio {last / first:.2f} p99_ms {p99:.2f} table_s {table_s:.2f}")
    finally:
        if not args.store:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
