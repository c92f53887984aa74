"""cluster.yaml passes Ray's launcher validation and gansweep's rules; broken copies are named.

Real Ray validation (prepare_config + validate_config, no cloud call), no cluster started.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.cluster.config_check import check, check_command

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster.yaml"


@pytest.fixture(autouse=True)
def laptop(tmp_path, monkeypatch):
    """The user's machine as `ray up` sees it: run from the repository's top, a Ray token made."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("a" * 32)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(ROOT)
    return home


def broken(tmp_path: Path, change) -> Path:
    config = yaml.safe_load(CLUSTER.read_text())
    change(config)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_real_cluster_yaml_passes(capsys):
    result = check(CLUSTER)
    assert result.errors == [] and result.warnings == []
    assert result.head == "head"
    assert result.workers == ["gpu_1x_spot", "gpu_4x_spot", "gpu_1x_ondemand"]
    assert check_command(CLUSTER) == 0
    out = capsys.readouterr().out
    assert f"{CLUSTER}: ok (head: head, workers: gpu_1x_spot, gpu_4x_spot, gpu_1x_ondemand)" in out


def test_check_cluster_command(tmp_path, capsys):
    from orchestrator.cli import main

    assert main(["check-cluster"]) == 0, "cluster.yaml in the current folder by default"
    assert "cluster.yaml: ok" in capsys.readouterr().out
    gpu_less = broken(tmp_path, lambda c: c["available_node_types"]["gpu_4x_spot"]["resources"].pop("GPU"))
    assert main(["check-cluster", str(gpu_less)]) == 2
    assert "gpu_4x_spot" in capsys.readouterr().err


def test_the_real_cluster_yaml_declares_what_the_brief_requires():
    config = yaml.safe_load(CLUSTER.read_text())
    types = config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    assert types["head"]["resources"] == {"CPU": 0, "GPU": 0}
    assert types["gpu_1x_spot"]["resources"] == {"CPU": 4, "GPU": 1}
    assert types["gpu_4x_spot"]["resources"] == {"CPU": 48, "GPU": 4}
    assert types["gpu_1x_ondemand"]["resources"] == {"CPU": 4, "GPU": 1}
    assert "InstanceMarketOptions" not in types["gpu_1x_ondemand"]["node_config"]
    for name, node_type in types.items():
        assert "Arn" in node_type["node_config"]["IamInstanceProfile"], name
        if name != "head":
            assert node_type["min_workers"] == 0, name
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    text = CLUSTER.read_text()
    assert "aws_access_key_id" not in text.lower() and "aws_secret" not in text.lower()


def test_missing_token_is_named(laptop):
    (laptop / ".ray" / "auth_token").unlink()
    result = check(CLUSTER)
    assert any("~/.ray/auth_token" in e and "ray get-auth-token --generate" in e for e in result.errors)


def test_unknown_top_level_key_is_rays_schema_error(tmp_path, capsys):
    path = broken(tmp_path, lambda c: c.update(max_worker=3))
    result = check(path)
    assert len(result.errors) == 1
    assert str(path) in result.errors[0]
    assert "the top level" in result.errors[0] and "'max_worker' was unexpected" in result.errors[0]
    assert check_command(path) == 2
    assert "'max_worker' was unexpected" in capsys.readouterr().err


def test_bad_field_inside_a_node_type_is_located(tmp_path):
    def change(config):
        config["available_node_types"]["gpu_4x_spot"]["resources"]["GPU"] = 0.5
    error = check(broken(tmp_path, change)).errors[0]
    assert "available_node_types.gpu_4x_spot.resources.GPU" in error and "integer" in error


def test_gpu_worker_without_gpu_is_named(tmp_path):
    def change(config):
        del config["available_node_types"]["gpu_4x_spot"]["resources"]["GPU"]
    result = check(broken(tmp_path, change))
    assert len(result.errors) == 1
    assert "'gpu_4x_spot' declares no GPU" in result.errors[0]
    assert "available_node_types.gpu_4x_spot.resources" in result.errors[0]


def test_head_that_accepts_trials_is_named(tmp_path):
    def change(config):
        config["available_node_types"]["head"]["resources"] = {"CPU": 8, "GPU": 0}
    result = check(broken(tmp_path, change))
    assert len(result.errors) == 1
    assert "head node type 'head' would accept trials (CPU: 8" in result.errors[0]


def test_head_without_declared_cpu_is_named(tmp_path):
    def change(config):
        config["available_node_types"]["head"]["resources"] = {"GPU": 0}
    assert "(CPU: missing" in check(broken(tmp_path, change)).errors[0]


def test_spot_type_must_be_named_spot(tmp_path):
    def change(config):
        types = config["available_node_types"]
        types["gpu_1x_ondemand"]["node_config"]["InstanceMarketOptions"] = {"MarketType": "spot"}
    result = check(broken(tmp_path, change))
    assert any("gpu_1x_ondemand" in e and "does not end in '_spot'" in e for e in result.errors)


def test_warm_workers_and_spot_without_fallback_are_warned(tmp_path):
    def change(config):
        types = config["available_node_types"]
        del types["gpu_1x_ondemand"]
        types["gpu_1x_spot"]["min_workers"] = 2
    result = check(broken(tmp_path, change))
    assert result.errors == []
    assert any("gpu_1x_spot.min_workers is 2" in w for w in result.warnings)
    assert any("every worker type is spot" in w for w in result.warnings)


def test_missing_file_is_named(tmp_path, capsys):
    path = tmp_path / "nope.yaml"
    assert check_command(path) == 2
    assert f"{path}: no such file" in capsys.readouterr().err


def test_yaml_syntax_error_is_named_with_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("cluster_name: gansweep\nprovider:\n  type: aws\n   region: us-west-2\n")
    [error] = check(path).errors
    assert error.startswith(f"{path}: not valid YAML (line 4")


def test_not_a_mapping_is_named(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    [error] = check(path).errors
    assert f"{path}: expected a mapping" in error


def test_module_does_not_import_ray():
    code = "import sys, orchestrator.cluster.config_check; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def node_types():
    from ray.autoscaler._private.util import prepare_config

    config = prepare_config(yaml.safe_load(CLUSTER.read_text()))
    return config["available_node_types"], config["head_node_type"]


def chosen(scorer, unavailable: set[str], demand: list[dict]) -> dict[str, int]:
    """What Ray's v1 autoscaler launches for `demand` (get_nodes_for, as in resource_demand_scheduler)."""
    from functools import partial

    from ray.autoscaler._private.node_provider_availability_tracker import NodeProviderAvailabilityTracker
    from ray.autoscaler._private.resource_demand_scheduler import get_nodes_for
    from ray.autoscaler.node_launch_exception import NodeLaunchException

    tracker = NodeProviderAvailabilityTracker()
    for name in unavailable:
        tracker.update_node_availability(name, int(time.time()), NodeLaunchException(
            "InsufficientInstanceCapacity", "no spot capacity", None))
    types, head = node_types()
    launched, _ = get_nodes_for(types, {}, head, 10, demand,
                                partial(scorer, node_availability_summary=tracker.summary()))
    return dict(launched)


def test_spot_first_then_on_demand_when_spot_launches_fail():
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer

    from orchestrator.cluster.spot_first import score

    one_trial = [{"CPU": 2, "GPU": 1}]
    assert chosen(score, set(), one_trial) == {"gpu_1x_spot": 1}
    assert chosen(score, {"gpu_1x_spot"}, one_trial) == {"gpu_1x_ondemand": 1}
    # Why the scorer: Ray's default ignores the failed launch and would retry spot forever.
    assert chosen(_default_utilization_scorer, {"gpu_1x_spot"}, one_trial) == {"gpu_1x_spot": 1}
    # Four 1-GPU trials pack on one g5.12xlarge; a trial wanting 4 GPUs only fits there.
    assert chosen(score, set(), [{"CPU": 8, "GPU": 1}] * 4) == {"gpu_4x_spot": 1}
    assert chosen(score, set(), [{"CPU": 1, "GPU": 4}]) == {"gpu_4x_spot": 1}
    # No trial ever goes to the head, whatever is unavailable.
    assert "head" not in chosen(score, {"gpu_1x_spot", "gpu_4x_spot", "gpu_1x_ondemand"}, one_trial)
