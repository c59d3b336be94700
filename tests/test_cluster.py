"""cluster.yaml is a valid Ray cluster-launcher config that gives trial drivers their resource; two nodes that share
no disk run a search on an S3 store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

from results.store import Store
from results.tables import read
from search.tune import DRIVER_RESOURCE

from processes import child_env, search_driver, wait_for
from conftest import EPOCHS, STAGES, check_tables, grid_space, second_node, timebalance_config, tiny_space, two_nodes, worker_on

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_matches_rays_schema() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"][DRIVER_RESOURCE] >= 1
    assert any("GPU" in t["resources"] for t in config["available_node_types"].values())
    assert DRIVER_RESOURCE in " ".join(config["head_start_ray_commands"])
    # every node's `ray start` reads the store's endpoint and keys first, so that its workers inherit them
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        [start] = [c for c in commands if "ray start" in c]
        assert start.index(". ~/.actnet-s3.env") < start.index("ray start")


def files_under(folder: Path) -> set[str]:
    """Every file below ``folder``, but for the virtual environment and Python's and pytest's caches."""
    skip = {".venv", "__pycache__", ".pytest_cache", ".git"}
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not skip & set(p.relative_to(folder).parts)}


def test_two_nodes_that_share_no_disk_run_a_search_on_s3(s3_store: Store, tiny_dataset: Path, tmp_path: Path) -> None:
    """A head and a second raylet with its own ``--temp-dir`` and working directory (a machine of its own, but for
    the dataset, which every node mounts), the store on the S3 server. `python -m search doctor` passes from both
    nodes; a threshold grid with a trial on each node completes; a TimeBalance ω grid on 2 seeds completes with
    each seed's teacher stages built once (by one ω's trial, on whichever node) and reused by the other, as the
    stages, trials and epochs tables all say (two trials racing for a stage on a folder store: test_stages.py). No trial
    wrote a file outside the store and Ray's own temp dirs: the second node's working directory stays empty, the
    repository gains nothing, and no downloaded stage result is left in either node's temp dir."""
    node_tmp = Path(tempfile.mkdtemp(prefix="rn-"))  # short: Ray's socket paths live below it
    node_cwd = tmp_path / "node-cwd"
    node_cwd.mkdir()
    repository = files_under(ROOT)
    copies_before = set(Path(tempfile.gettempdir()).glob("stage-results-*"))
    with two_nodes(tmp_path, temp_dir=node_tmp, cwd=node_cwd) as (address, _):
        doctor = subprocess.run([sys.executable, "-m", "search", "doctor", "--store", s3_store.uri, "--address", address["gcs"]],
                                cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr[-3000:]
        assert doctor.stdout.count("ok   store from node") == 2 and "FAIL" not in doctor.stdout, doctor.stdout
        space = grid_space(tmp_path, tiny_dataset, [0.0, 0.5], max_concurrent=2)
        name, log = "two-nodes", tmp_path / "driver.log"
        driver = search_driver(space, name, s3_store.uri, log, "--address", address["gcs"])
        second = second_node(address["dashboard"])
        seen = wait_for(lambda: "worker" if worker_on(address["dashboard"], second) else "ended" if driver.poll() is not None else None,
                        300, "a Train worker on the second node", poll=0.5)  # fmt: skip
        assert seen == "worker", log.read_text()[-4000:]
        assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
        check_tables(s3_store, name, trials=2)

        base = timebalance_config(tiny_dataset, epochs=EPOCHS, steps_per_epoch=1, test_clips=1, pretrain_epochs=1, finetune_epochs=1)
        omegas = tiny_space(tmp_path, tiny_dataset, name="omega", base={k: v for k, v in base.items() if k != "omega"},
                            space={"omega": {"grid": [0.5, 1.0]}}, seeds=[0, 1], max_concurrent=2)  # fmt: skip
        driver = search_driver(omegas, "omega", s3_store.uri, log, "--address", address["gcs"])
        assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
        check_tables(s3_store, "omega", trials=4)
    stages = read(s3_store, "stages", "omega").to_pylist()
    for seed in (0, 1):
        for stage in STAGES:
            mine = [r for r in stages if (r["seed"], r["stage"]) == (seed, stage)]
            assert sorted(r["reused"] for r in mine) == [False, True], mine  # built by one ω's trial, reused by the other's
            assert len({r["trial_id"] for r in mine}) == 2 and len({r["stage_key"] for r in mine}) == 1
            [built] = [r for r in mine if not r["reused"]]
            assert all(r["built_by"] == built["trial_id"] for r in mine), mine
    shared = ",".join(STAGES)
    trials = read(s3_store, "trials", "omega").to_pylist()
    for seed in (0, 1):  # the trials say the same: per seed, one built the three stages and the other reused them
        mine = [t for t in trials if t["seed"] == seed]
        assert sorted((t["stages_built"] or "", t["stages_reused"] or "") for t in mine) == [("", shared), (shared, "")]
    epochs = read(s3_store, "epochs", "omega").to_pylist()
    built = sorted((e["seed"], e["stage"]) for e in epochs if e["stage_key"] is not None and e["trial_id"] is None)
    assert built == sorted((seed, stage) for seed in (0, 1) for stage in STAGES)  # each stage's one epoch, written once
    assert sorted(e["stage"] for e in epochs if e["stage_key"] is None) == ["student"] * 4 * EPOCHS
    assert {e["stage_key"] for e in epochs} - {None} == {r["stage_key"] for r in stages}
    assert not list(node_cwd.iterdir()), sorted(node_cwd.rglob("*"))
    assert files_under(ROOT) - repository == set()
    assert list(node_tmp.glob("session_*")), "the second node used its own temp dir"
    assert not list(node_tmp.rglob("stage-results-*")) and set(Path(tempfile.gettempdir()).glob("stage-results-*")) <= copies_before
    shutil.rmtree(node_tmp, ignore_errors=True)
