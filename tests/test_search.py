"""The search service: space validation, Optuna's determinism, and a real Tune search over TorchTrainer trials."""

from __future__ import annotations

import math
import re

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from results.page import write
from results.plot import load as load_search
from results.plot import plot
from results.report import query, seed_table, show
from results.store import Store, StoreError
from search.space import SpaceError, describe, load
from search.tune import param_space, searcher

from conftest import tiny_config, tiny_space, write_space

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scheduler": {"type": "asha", "gace_period": 2}}, r"scheduler\.gace_period: unknown key; allowed: type, max_t, grace_period"),
        ({"scheduler": {"type": "hyperband"}}, r"scheduler\.type: Input should be 'asha', 'halving' or 'none'"),
        ({"scheduler": {"type": "halving", "seeds": "apart"}}, r"scheduler: seeds: halving compares configurations by their mean"),
        ({"scheduler": {"type": "none", "seeds": "together"}}, r"scheduler: max_t and seeds: only for type 'asha' or 'halving'"),
        ({"space": {"threshold": {"uniform": [0.9, 0.1]}}}, r"space\.threshold: .*low must be below high"),
        ({"space": {"threshold": {"choice": [0.5, 1.5]}}}, r"space\.threshold\.choice\[1\]: Input should be less than or equal to 1"),
        ({"space": {"thresold": {"choice": [0.5]}}}, r"space\.thresold: unknown parameter; allowed: .*threshold"),
        ({"space": {"seed": {"choice": [1, 2]}}}, r"space\.seed: unknown parameter; seeds are set by the top-level 'seeds'"),
        ({"base": {"primary_backbone": "resnet3d_34"}}, r"base\.primary_backbone: unknown backbone 'resnet3d_34'"),
        ({"base": {"mu": 0}}, r"base\.mu: Input should be greater than or equal to 1"),
        ({"resources": {"workers": 0}}, r"resources\.workers: Input should be greater than or equal to 1"),
        ({"metric": "accuracy"}, r"metric: 'accuracy' is not a reported metric; allowed: top1"),
        ({"search": {"type": "optuna"}, "space": {"gamma": {"grid": [1, 2]}}}, r"grid parameters \(gamma\) need search type 'grid'"),
        ({"max_concurent": 2}, r"max_concurent: unknown key; allowed: .*max_concurrent"),
    ],
)
def test_broken_space_names_file_and_key(tmp_path: Path, fields: dict, message: str) -> None:
    path = write_space(tmp_path / "broken.yaml", name="broken", **fields)
    with pytest.raises(SpaceError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


def test_check_reports_the_key_path_and_starts_no_ray(tmp_path: Path) -> None:
    path = write_space(tmp_path / "broken.yaml", name="broken", base={"threshold": 2}, scheduler={"type": "asha", "grace_period": 0})
    code = (
        "import sys\nfrom search.__main__ import main\nrc = main(['check', sys.argv[1]])\n"
        "print('IMPORTED', sorted(m for m in ('ray', 'torch') if m in sys.modules)); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert f"{path}: scheduler.grace_period: Input should be greater than or equal to 1" in out.stderr
    assert "IMPORTED []" in out.stdout  # neither Ray nor torch: check is quick and needs neither


def test_every_shipped_space_passes_check() -> None:
    for path in sorted((ROOT / "spaces").rglob("*.yaml")):
        space = load(path)
        assert space.num_trials >= 1, path


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    path = write_space(tmp_path / "s.yaml", name="s", space={"beta": {"choice": [0.0, 2.0]}})
    assert load(path, {"epochs": 3}).base["epochs"] == 3
    with pytest.raises(SpaceError, match=r"base\.threshold: Input should be less than or equal to 1"):
        load(path, {"threshold": 3})
    with pytest.raises(SpaceError, match=r"space\.beta: varied by the space"):
        load(path, {"beta": 1.0})


def test_trial_count_counts_grid_cells_and_seeds(tmp_path: Path) -> None:
    path = write_space(tmp_path / "g.yaml", name="g", space={"threshold": {"grid": [0.5, 0.8]}, "gamma": {"grid": [1, 2, 3]}}, seeds=3)
    assert load(path).num_trials == 2 * 3 * 3
    path = write_space(tmp_path / "o.yaml", name="o", space={"lr": {"loguniform": [1e-3, 1e-1]}}, seeds=[4, 5],
                       search={"type": "optuna"}, num_samples=5)
    assert load(path).num_trials == 10


def test_a_cell_silent_on_a_key_other_cells_set_gets_the_base_value(tmp_path: Path) -> None:
    """Tune declares a key some cells set as a choice; a point without it would get a random value."""
    from ray.tune.experiment import Experiment

    path = write_space(tmp_path / "m.yaml", name="m", base={"gamma": 3.0}, seeds=[0, 1], cells=[
        {"method": "cmpl", "aux_backbone": "resnet3d_18"}, {"method": "actnetformer", "gamma": 0.0}, {"method": "fixmatch"}
    ])  # fmt: skip
    space = load(path)
    generator = searcher(space)
    generator.add_configurations([Experiment("m", lambda config: None, config=param_space(space))])
    trials = []
    while (trial := generator.next_trial()) is not None:
        trials.append((trial.config["method"], trial.config["gamma"], trial.config["aux_backbone"], trial.config["seed"]))
    assert sorted(trials) == [
        ("actnetformer", 0.0, None, 0), ("actnetformer", 0.0, None, 1), ("cmpl", 3.0, "resnet3d_18", 0),
        ("cmpl", 3.0, "resnet3d_18", 1), ("fixmatch", 3.0, None, 0), ("fixmatch", 3.0, None, 1),
    ]  # fmt: skip


def test_a_set_override_replaces_the_key_in_every_cell(tmp_path: Path) -> None:
    """A toy command's ``--set epochs=1`` shortens a cell that sets its own epochs too (TimeBalance's 150)."""
    path = write_space(tmp_path / "m.yaml", name="m", base={"epochs": 250}, cells=[{"method": "supervised"},
                       {"method": "timebalance", "epochs": 150, "lr": 0.001}])  # fmt: skip
    assert sorted(c["epochs"] for c in load(path).grid_cells()) == [150, 250]
    cells = load(path, {"epochs": 1, "lr": 0.5}).grid_cells()
    assert [(c["method"], c["epochs"], c["lr"]) for c in cells] == [("supervised", 1, 0.5), ("timebalance", 1, 0.5)]
    with pytest.raises(SpaceError, match=r"cells\[1\]\.ssl_frames: the long clip's 6 frames"):
        load(path, {"ssl_frames": 6})  # an override is checked in every cell it reaches


def test_check_lists_a_pipeline_methods_stages(tmp_path: Path) -> None:
    stages = "stages: pretrain_invariant → pretrain_distinctive → finetune_teachers → student"
    assert stages in describe(load(write_space(tmp_path / "t.yaml", name="t", base={"method": "timebalance"})))
    assert "stages:" not in describe(load(write_space(tmp_path / "a.yaml", name="a", base={"method": "actnetformer"})))


def test_a_pipeline_method_needs_a_store_it_can_share_stages_in(tmp_path: Path) -> None:
    """TimeBalance's teachers are shared through the store's create-if-absent (``trainable.stages``): a folder or
    S3 has it; another pyarrow filesystem is refused before Ray starts, naming the file and the method."""
    from search.preflight import check_stage_store

    path = write_space(tmp_path / "m.yaml", name="m", cells=[{"method": "supervised"}, {"method": "timebalance"}])
    with pytest.raises(StoreError, match=r"m\.yaml: method timebalance: stage results need a store in a folder"):
        check_stage_store(load(path), "mock:///store")
    check_stage_store(load(path), str(tmp_path / "store"))  # a folder is fine
    check_stage_store(load(path), "s3://bucket/store")  # and S3
    check_stage_store(load(write_space(tmp_path / "s.yaml", name="s", base={"method": "supervised"})), "mock:///store")


def first_suggestions(space_path: Path, n: int) -> list[dict]:
    space = load(space_path)
    algo = searcher(space)
    algo.set_search_properties(space.spec.metric, space.spec.mode, param_space(space))
    return [algo.suggest(f"t{i}") for i in range(n)]


def test_same_space_and_sampler_seed_propose_the_same_configurations(tmp_path: Path) -> None:
    fields = {
        "name": "o",
        "space": {"threshold": {"uniform": [0.5, 0.95]}, "lr": {"loguniform": [1e-4, 1e-1]}, "beta": {"choice": [0, 1, 2]}},
        "search": {"type": "optuna", "seed": 7, "startup_trials": 2},
        "seeds": [0, 1],
        "num_samples": 4,
    }
    path = write_space(tmp_path / "o.yaml", **fields)
    a, b = first_suggestions(path, 6), first_suggestions(path, 6)
    assert a == b
    # Each configuration is repeated over the seeds before the next one is proposed.
    assert [s["seed"] for s in a] == [0, 1, 0, 1, 0, 1]
    assert a[0]["threshold"] == a[1]["threshold"] != a[2]["threshold"]
    other = write_space(tmp_path / "p.yaml", **{**fields, "search": {"type": "optuna", "seed": 8, "startup_trials": 2}})
    assert first_suggestions(other, 1)[0]["threshold"] != a[0]["threshold"]


def test_search_runs_concurrent_trainer_trials_and_writes_parquet(ray_local: str, tiny_dataset: Path, tmp_path: Path) -> None:
    """Four Ray Train trials, two at a time on two CPUs; ASHA stops the ones whose pseudo-labels never pass.

    threshold 0 accepts every unlabeled clip (mask rate 1), threshold 1 none (mask rate 0), so whichever
    order the trials report in, ASHA on mask_rate_primary stops at least one threshold-1 trial at epoch 1.
    """
    from search.runner import run

    path = tiny_space(
        tmp_path, tiny_dataset, metric="mask_rate_primary",
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    store = Store(tmp_path / "store")
    search_id = run(load(path), store, name="tiny-search")

    trials = pq.read_table(tmp_path / "store" / "trials").to_pylist()
    epochs = pq.read_table(tmp_path / "store" / "epochs").to_pylist()
    searches = pq.read_table(tmp_path / "store" / "searches").to_pylist()
    assert [s["search_id"] for s in searches] == [search_id] and searches[0]["status"] == "completed"
    assert "threshold" in searches[0]["space_yaml"]
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    assert sorted((t["threshold"], t["seed"]) for t in trials) == [(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)]
    # one epochs row per report, and the trial summaries agree with them
    for t in trials:
        rows = [e for e in epochs if e["trial_id"] == t["trial_id"]]
        assert [e["epoch"] for e in rows] == list(range(1, t["epochs_run"] + 1))
        # the run's start is timed on its first epoch only: controller and worker, then imports, data, models
        assert rows[0]["startup_s"] > 0 and rows[0]["setup_s"] > 0
        assert all(math.isnan(e["startup_s"]) and math.isnan(e["setup_s"]) for e in rows[1:])
    stopped = [t for t in trials if t["status"] == "stopped"]
    assert stopped and all(t["threshold"] == 1.0 and t["stopped_at_epoch"] == 1 for t in stopped)
    assert all(t["status"] == "completed" and t["epochs_run"] == 2 for t in trials if t["threshold"] == 0.0)
    # two trials ran at the same time: some trial started before another one ended
    spans = sorted((t["started_at"], t["ended_at"]) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    # the tables read back through DuckDB and the report commands
    assert "4" in query(store, f"SELECT count(*) AS n FROM trials WHERE search_id = '{search_id}'")
    assert "stopped" in show(store, search_id)
    # mean ± std over the two seeds: threshold 0 accepts every clip on both seeds
    table = seed_table(store, "tiny", "mask_rate_primary").splitlines()
    assert table[0] == f"search {search_id}"
    assert any(line.split()[:4] == ["0", "1.0", "±", "0.0"] for line in table[3:]), table
    # the figures and the HTML page read the same tables: threshold 1 accepts nothing on either seed
    data = load_search(store, search_id)
    names = [f.path.name for f in plot(data, tmp_path / "figures")]
    assert names == ["ablation_mask_rate_primary.png", "curves_mask_rate_primary.png", "pseudo_labels.png"]
    page = re.sub(r"<[^>]+>", " ", write(data, tmp_path / "report.html", baseline="threshold=0").read_text())
    assert "-1.00 ± 0.00" in page and "0 of 2" in page and "tiny-search" in page


def test_a_trial_s_trainer_imports_torch_in_its_workers_only_and_they_begin_importing_the_loop_early(
    ray_local: str, tmp_path: Path
) -> None:
    """A trial's trainer (``search.backend.trial_trainer``): neither the trial's process (its module) nor its Train
    controller (where Train's callbacks run) imports torch, while each worker has torch's gloo process group and
    distributed environment as ``TorchTrainer`` sets them; and by the train function's first line the worker has
    begun importing the training loop (the warm-up thread runs, or the loop is imported), which with Train's own
    ``TorchConfig`` it would not have. Nor does the run start Train's datasets actor (a trial has no Ray Datasets)
    or, on this local instance, its preemption watcher: two processes per trial that had nothing to do."""
    import json

    import ray.train

    from search.backend import trial_trainer

    trial_process = subprocess.run([sys.executable, "-c", "import sys, search.trial; print('torch' in sys.modules)"],
                                   cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)  # fmt: skip
    assert trial_process.stdout.strip() == "False"
    seen = tmp_path / "seen.json"
    controller = tmp_path / "controller"

    def probe(config: dict) -> None:
        import os
        import threading

        import torch.distributed as dist

        begun = "trainable.loop" in sys.modules or any(t.name == "warm-up" for t in threading.enumerate())
        group = dist.is_initialized() and dist.get_backend()
        env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
        seen.write_text(json.dumps({"begun": begun, "group": group, **env}))
        ray.train.report({"done": 1})

    class InController(ray.train.UserCallback):
        def after_report(self, run_context: Any, metrics: list, checkpoint: Any) -> None:
            controller.write_text(str("torch" in sys.modules))

    from ray.util.state import list_actors

    def helpers() -> int:
        return sum(len(list_actors(filters=[("class_name", "=", c)], limit=10000)) for c in ("DatasetManager", "PreemptionWatcher"))

    before = helpers()
    trial_trainer(
        probe,
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="warm", storage_path=str(tmp_path / "train"), callbacks=[InController()]),
    ).fit()
    found = json.loads(seen.read_text())
    assert found.pop("MASTER_ADDR")
    assert found == {"begun": True, "group": "gloo", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    assert controller.read_text() == "False"
    assert helpers() == before


def test_processes_of_the_local_instance_reach_its_own_state_api(ray_local: str) -> None:
    """Train frees a finished trial's workers only if its cleaner, a Ray actor, finds this instance's state API.

    Left to itself it would ask the head named in /tmp/ray/ray_current_cluster (the last ``ray start`` on the
    machine, here the job test's head, stopped by now) and the next trials would wait forever for CPUs.
    """
    import ray
    from ray.util.state import list_nodes

    @ray.remote(num_cpus=0)
    def seen_from_a_worker() -> tuple[str | None, list[str]]:
        import os

        return os.environ.get("RAY_API_SERVER_ADDRESS"), [n.node_id for n in list_nodes(timeout=20)]

    address, nodes = ray.get(seen_from_a_worker.remote(), timeout=120)
    assert address == ray_local
    assert nodes == [ray.get_runtime_context().get_node_id()]


def test_resumed_optuna_search_keeps_its_history_and_reruns_only_missing_seeds(tmp_path: Path) -> None:
    """The ledger says: configuration A ran on both seeds (told to the study as one COMPLETE trial, value the
    mean), B ended on seed 0 and was running on seed 1. The first proposal is B again, for seed 1 only."""
    import optuna

    from search.resume import Earlier

    fields = {
        "name": "o", "space": {"threshold": {"uniform": [0.5, 0.95]}}, "seeds": [0, 1], "num_samples": 4,
        "search": {"type": "optuna", "seed": 3, "startup_trials": 2}, "metric": "top1", "base": {"epochs": 2},
    }  # fmt: skip
    space = load(write_space(tmp_path / "o.yaml", **fields))

    def row(trial_id: str, threshold: float, seed: int, status: str) -> dict:
        return {**space.base, "trial_id": trial_id, "threshold": threshold, "seed": seed, "status": status}

    earlier = Earlier(
        search={"search_id": "o"},
        trials=[row("a0", 0.6, 0, "completed"), row("a1", 0.6, 1, "completed"), row("b0", 0.9, 0, "completed"), row("b1", 0.9, 1, "running")],
        curves={"a0": {1: 10.0, 2: 20.0}, "a1": {1: 30.0, 2: 40.0}, "b0": {1: 5.0, 2: 7.0}, "b1": {1: 6.0}},
    )
    algo = searcher(space, earlier=earlier)
    algo.set_search_properties(space.spec.metric, space.spec.mode, param_space(space))
    first = algo.suggest("t0")
    assert (first["threshold"], first["seed"]) == (0.9, 1)
    assert algo.curves["t0"] == {1: 6.0}  # the unfinished seed's epochs so far, for the group's mean
    told = [t for t in algo._ot_study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [(t.params["threshold"], t.value, t.intermediate_values) for t in told] == [(0.6, 30.0, {1: 20.0, 2: 30.0})]
    algo.on_trial_result("t0", {"top1": 9.0, "epoch": 2})
    algo.on_trial_complete("t0", {"top1": 9.0, "epoch": 2})  # B's group is whole again: told as mean of 7 and 9
    b = [t for t in algo._ot_study.trials if t.params["threshold"] == 0.9]
    assert [(t.state, t.value) for t in b] == [(optuna.trial.TrialState.COMPLETE, 8.0)]
    second = algo.suggest("t1")
    assert second["seed"] == 0 and second["threshold"] not in (0.6, 0.9)


def test_resumed_asha_starts_from_the_rungs_of_ended_trials(tmp_path: Path) -> None:
    """Two ended trials reached 50 and 60 at epoch 1: a new trial reporting 10 at epoch 1 is stopped at once,
    as in the uninterrupted search; a trial resuming after epoch 1 has its epoch 1 in the rung already, so
    its next report is judged at the next rung."""
    from types import SimpleNamespace

    from search.resume import Earlier, Pins, config_key, plan
    from search.tune import scheduler

    space = load(tiny_space(tmp_path, tmp_path, base=tiny_config(tmp_path, epochs=4),
                            scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2}))  # fmt: skip
    base = {**space.base, "seed": 0}
    resumed = {**base, "threshold": 1.0}
    earlier = Earlier(
        search={"search_id": "s"},
        trials=[{**base, "trial_id": "a", "threshold": 0.0, "status": "completed"},
                {**base, "trial_id": "b", "threshold": 0.0, "seed": 1, "status": "stopped"},
                {**resumed, "trial_id": "c", "status": "running"}],
        curves={"a": {1: 50.0, 2: 55.0}, "b": {1: 60.0}, "c": {1: 5.0}},
    )  # fmt: skip
    todo = plan(space, earlier)
    assert [(p["threshold"], p["seed"]) for p in todo.points] == [(1.0, 0), (1.0, 1)]
    assert todo.pins == Pins({config_key(resumed): "c"}, {"c": {1: 5.0}})
    asha = scheduler(space, todo, earlier)
    asha.set_search_properties("top1", "max")
    new = SimpleNamespace(trial_id="t1", config={**base, "threshold": 1.0, "seed": 1})
    again = SimpleNamespace(trial_id="t2", config=resumed)
    asha.on_trial_add(None, new)
    asha.on_trial_add(None, again)
    assert asha.on_trial_result(None, new, {"epoch": 1, "top1": 10.0}) == "STOP"
    rungs = dict(asha._brackets[0]._rungs)
    assert rungs[1] == {"a": 50.0, "b": 60.0, "t2": 5.0, "t1": 10.0} and rungs[2] == {"a": 55.0}
    assert asha.on_trial_result(None, again, {"epoch": 2, "top1": 70.0}) == "CONTINUE"


def test_resumed_optuna_does_not_propose_what_ran_already(tmp_path: Path) -> None:
    """A search killed after 4 proposals (3 ended, 1 running): resumed, it proposes the running one again
    and then new configurations, not the first run's random start again (its sampler's stream is another)."""
    from search.resume import Earlier

    path = write_space(tmp_path / "o.yaml", name="o", space={"threshold": {"uniform": [0.5, 0.95]}}, seeds=[0], num_samples=8,
                       search={"type": "optuna", "seed": 0, "startup_trials": 4}, base={"epochs": 2})  # fmt: skip
    first = [s["threshold"] for s in first_suggestions(path, 4)]
    space = load(path)
    rows = [{**space.base, "trial_id": f"x{i}", "threshold": t, "seed": 0, "status": "completed" if i < 3 else "running"}
            for i, t in enumerate(first)]  # fmt: skip
    algo = searcher(space, earlier=Earlier({"search_id": "o"}, rows, {f"x{i}": {1: 1.0, 2: 2.0} for i in range(4)}))
    algo.set_search_properties(space.spec.metric, space.spec.mode, param_space(space))
    again = [algo.suggest(f"t{i}")["threshold"] for i in range(3)]
    assert again[0] == first[3] and not set(again[1:]) & set(first)
