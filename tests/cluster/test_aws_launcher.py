"""cluster/aws.yaml passes Ray's own cluster-config validation, and scales from zero.

The same two steps `ray up` runs before it touches AWS: merge the provider defaults
(``prepare_config``), then validate against Ray's schema and rules (``validate_config``).
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

LAUNCHER = Path(__file__).resolve().parents[2] / "cluster" / "aws.yaml"


def launcher_config() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def test_launcher_config_passes_ray_validation():
    validate_config(prepare_config(launcher_config()))


def test_validation_catches_a_broken_config():
    """Guards the test above: the same validation rejects a misspelt field."""
    broken = launcher_config()
    broken["available_node_types"]["cpu_worker"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(broken))


def test_cpu_head_and_worker_groups_that_scale_from_zero():
    config = prepare_config(launcher_config())
    node_types = config["available_node_types"]
    head = node_types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "the head schedules no work, so the workers carry it"
    workers = {name: spec for name, spec in node_types.items() if name != config["head_node_type"]}
    assert set(workers) == {"cpu_worker", "gpu_worker"}
    assert all(spec["min_workers"] == 0 and spec["max_workers"] > 0 for spec in workers.values())
    assert workers["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert workers["gpu_worker"]["docker"]["worker_image"].endswith("-gpu")


def test_nodes_carry_rayfleet():
    config = prepare_config(launcher_config())
    assert config["file_mounts"] == {"~/rayfleet": "."}
    assert any("make setup" in command for command in config["setup_commands"])
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "PYTHONPATH=$HOME/rayfleet" in command and "RAYFLEET_MODELS_DIR" in command
