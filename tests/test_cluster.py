"""cluster.yaml is a valid Ray cluster-launcher config that gives trial drivers their resource."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

from search.tune import DRIVER_RESOURCE

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_matches_rays_schema() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"][DRIVER_RESOURCE] >= 1
    assert any("GPU" in t["resources"] for t in config["available_node_types"].values())
    assert DRIVER_RESOURCE in " ".join(config["head_start_ray_commands"])
