"""Sweeps on an autoscaling cluster with cluster.yaml's node types (Ray's fake multi-node provider):
workers start from zero for the trials and go away when idle; a space no node type can run is
refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from autoscaling import FAKE_HEAD_NODE_ID, HEAD_TYPE, FakeAutoscalingCluster
from mlflow.tracking import MlflowClient

from orchestrator.cli import main

pytestmark = [pytest.mark.sweep, pytest.mark.multinode, pytest.mark.slow]

NODE_TAG = "gansweep.node_id"  # orchestrator.tracking.runs.NODE: the Ray node a trial's epochs ran on


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, cache_dir):
    with FakeAutoscalingCluster(tmp_path_factory.mktemp("autoscaling")) as started:
        yield started


def write_space(tmp_path: Path, tiny: dict, resources: dict) -> Path:
    space = {
        "name": "autoscaled", "trainer": "dcgan", "metric": "fid", "mode": "min",
        "num_samples": 2, "max_concurrent": 2, "resources": resources,
        "sampler": {"type": "random", "seed": 0}, "scheduler": {"type": "fifo"},
        "fixed": {**tiny, "epochs": 2},
        "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def sweep(tmp_path: Path, space: Path, address: str) -> int:
    # The time budget only ends a sweep whose workers never come (Tune waits for them forever).
    return main(["sweep", str(space), "--address", address, "--storage", str(tmp_path / "sweeps"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--time-budget", "240"])


def worker_types(cluster: FakeAutoscalingCluster) -> dict[str, dict]:
    return {name: spec for name, spec in cluster.config["available_node_types"].items() if name != HEAD_TYPE}


@pytest.mark.parametrize("resources, lowered", [({"cpu": 1, "gpu": 8}, "resources.gpu"),
                                                ({"cpu": 64, "gpu": 1}, "resources.cpu")])
def test_space_no_node_type_can_run_is_refused_before_anything_starts(
        tmp_path, tiny, cluster, capsys, resources, lowered):
    assert cluster.worker_nodes() == []
    assert sweep(tmp_path, write_space(tmp_path, tiny, resources), cluster.address) == 2

    err = capsys.readouterr().err
    for name, spec in worker_types(cluster).items():
        cpu, gpu = spec["resources"].get("CPU", 0), spec["resources"].get("GPU", 0)
        assert f"{name}: {cpu:g} CPU, {gpu:g} GPU" in err, err
    assert f"needs {resources['cpu']:g} CPU and {resources['gpu']:g} GPU" in err
    assert f"Lower {lowered} in " in err and "cluster.yaml" in err, err
    experiment = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_experiment_by_name("autoscaled")
    if experiment is not None:
        assert MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs([experiment.experiment_id]) == []
    assert cluster.worker_nodes() == [], "no worker was launched for a refused sweep"
    assert not (tmp_path / "sweeps").exists() or not any((tmp_path / "sweeps").iterdir())


def test_sweep_starts_workers_from_zero_and_they_go_away_when_idle(tmp_path, tiny, cluster):
    assert cluster.worker_nodes() == [], "the workers start at zero (min_workers 0)"
    space = write_space(tmp_path, tiny, {"cpu": 1, "gpu": 1})
    assert sweep(tmp_path, space, cluster.address) == 0

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("autoscaled")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("gansweep.role") == "sweep")
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
    started = cluster.node_ids_ever() - {FAKE_HEAD_NODE_ID}
    assert started, "the autoscaler started worker nodes"
    for kid in kids:
        assert kid.data.tags[NODE_TAG] in started, "every trial ran on a worker, none on the head"

    cluster.wait_for(lambda: cluster.worker_nodes() == [], "the idle workers to be removed", 120)
