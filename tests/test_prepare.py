"""What every trial needs (the dataset, the evaluator network) is made once per node before the
first trial starts (orchestrator/sweep/node_preparation.py, trainers/prepare.py), not inside the
first trials."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import make_folder
from mlflow.tracking import MlflowClient
from test_sweep import children, sweep_args

from orchestrator.cli import main
from orchestrator.space.loading import load_space
from orchestrator.sweep.node_preparation import data_configs


def write_space(tmp_path: Path, fixed: dict, params: dict | None = None, trainer: str = "mlp_gan") -> Path:
    space = {"name": "prep", "trainer": trainer, "metric": "fid", "mode": "min", "num_samples": 2,
             "max_concurrent": 2, "resources": {"cpu": 1}, "sampler": {"type": "random", "seed": 0},
             "scheduler": {"type": "fifo"}, "stop_when": False, "fixed": fixed,
             "params": params or {"lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.fixture
def tiny_8px(tmp_path, tiny_mlp) -> dict:
    """The MLP GAN on a folder of its own (so no evaluator is cached for it yet), at 8x8 pixels:
    the evaluator trains in seconds."""
    return {**tiny_mlp, "data_path": str(make_folder(tmp_path / "shapes", per_class=30)), "image_size": 8,
            "epochs": 1}


@pytest.mark.sweep
@pytest.mark.slow
def test_evaluator_trained_once_before_any_trial(tmp_path, tiny_8px, ray_address, cache_dir, capsys):
    before = set((cache_dir / "evaluators").glob("folder-8px-*.pt"))
    space = write_space(tmp_path, tiny_8px)
    assert main(sweep_args(tmp_path, space, ray_address)) == 0

    made = set((cache_dir / "evaluators").glob("folder-8px-*.pt")) - before
    assert len(made) == 1, "one evaluator for the new folder"
    err = capsys.readouterr().err
    assert "preparing folder data and evaluator on 1 node ..." in err
    assert "(folder: evaluator trained)" in err
    _, kids = children(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), "prep")
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids)
    first_start_s = min(k.info.start_time for k in kids) / 1000
    assert made.pop().stat().st_mtime < first_start_s, "written before the first trial started"


@pytest.mark.sweep
@pytest.mark.slow
def test_missing_images_end_the_sweep_before_any_trial(tmp_path, tiny_8px, ray_address, capsys):
    empty = tmp_path / "empty" / "class"
    empty.mkdir(parents=True)
    space = write_space(tmp_path, {**tiny_8px, "data_path": str(empty.parent)})
    assert main(sweep_args(tmp_path, space, ray_address)) == 2

    err = capsys.readouterr().err
    assert f"error: {space}: fixed.data_path: data_path={str(empty.parent)!r} holds no images" in err
    assert not (tmp_path / "sweeps").exists() or not any((tmp_path / "sweeps").glob("*/t*")), "no trial"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_experiment_by_name("prep") is None, "nothing recorded"


def test_each_choice_of_a_sampled_dataset_is_prepared(tmp_path):
    space = load_space(write_space(tmp_path, {"image_size": 28}, {
        "dataset": {"type": "categorical", "choices": ["mnist5k", "mnist"]},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-3}}))
    configs, skipped = data_configs(space)
    assert skipped is None
    assert configs == [{"image_size": 28, "dataset": "mnist5k"}, {"image_size": 28, "dataset": "mnist"}]


def test_a_data_key_sampled_from_a_range_leaves_preparing_to_the_trials(tmp_path):
    space = load_space(write_space(tmp_path, {"dataset": "mnist5k"}, {
        "split_seed": {"type": "int", "low": 0, "high": 10**6}}))
    configs, skipped = data_configs(space)
    assert configs == [] and skipped == "the choices of split_seed make 1000001 data configs"


def test_a_resumed_sweep_keeps_the_evaluator_it_staged(tmp_path):
    """--resume prepares again, possibly on other nodes whose caches hold other networks: the one
    already in the sweep's storage stays, and its digest is the one the trials report."""
    from orchestrator.sweep.node_preparation import stage_evaluator
    from trainers import evaluator

    staging, key, first = tmp_path / "sweeps" / "run-1" / "evaluators", "mnist5k-28px-abc", b"first network"
    assert stage_evaluator(key, first, str(staging)) == evaluator.digest(first)
    assert stage_evaluator(key, b"another node's", str(staging)) == evaluator.digest(first)
    assert (staging / f"{key}.pt").read_bytes() == first
