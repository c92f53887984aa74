"""A param whose choices are lists (the MLP GAN's depth and widths, report 003 experiments 9-10):
Optuna takes scalar choices only, so the space searches their labels (`256-512-1024`) and gives each
trial the list; MLflow params and run names show the label, and --warm-start reads it back."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.errors import SpaceError
from orchestrator.space.loading import load_space
from orchestrator.sweep import warm_start

WIDE, DEEP = [64, 128, 256], [64, 128, 256, 256]
SPACE = {"name": "widths", "trainer": "mlp_gan", "metric": "fid", "mode": "min", "num_samples": 4,
         "sampler": {"type": "tpe", "seed": 0}, "fixed": {"epochs": 2},
         "params": {"hidden": {"type": "categorical", "choices": [WIDE, DEEP]},
                    "lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}}}


def written(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


def test_each_trial_gets_a_list_and_optuna_its_label(tmp_path):
    space = load_space(written(tmp_path))
    assert space.optuna_distributions()["hidden"] == optuna.distributions.CategoricalDistribution(
        ["64-128-256", "64-128-256-256"])
    study = optuna.create_study(sampler=space.optuna_sampler())
    configs = []
    for _ in range(6):
        trial = study.ask()
        config = {**trial.params, **space.define_by_run(trial)}
        assert trial.params["hidden"] in ("64-128-256", "64-128-256-256")
        assert config["hidden"] in (WIDE, DEEP) and config["epochs"] == 2
        configs.append(config)
        study.tell(trial, 1.0)
    assert space.run_name("t001", {"hidden": DEEP, "lr": 2e-4}) == "t001 hidden=64-128-256-256 lr=2e-4"


def test_start_from_and_a_grid_take_list_choices(tmp_path):
    space = load_space(written(tmp_path, start_from=[{"hidden": DEEP, "lr": 3e-4}]))
    assert space.start_from == [{"hidden": DEEP, "lr": 3e-4}]
    study = optuna.create_study(sampler=space.optuna_sampler())
    study.enqueue_trial(space.optuna_point(space.start_from[0]))  # as the searcher does
    trial = study.ask()
    assert space.define_by_run(trial)["hidden"] == DEEP and trial.params["lr"] == 3e-4

    grid = load_space(written(tmp_path, sampler={"type": "grid", "seed": 0},
                              params={"hidden": SPACE["params"]["hidden"]}, start_from=[{"hidden": DEEP}]))
    study = optuna.create_study(sampler=grid.optuna_sampler())
    seen = []
    for _ in range(2):
        trial = study.ask()
        seen.append(grid.define_by_run(trial)["hidden"])
        study.tell(trial, 1.0)
    assert seen == [DEEP, WIDE], "start_from first, then the rest of the grid"


@pytest.mark.parametrize("choices, words", [
    ([WIDE, [64, -1]], "rejects [64, -1]"),  # the trainer's own check: widths are positive integers
    ([WIDE, [[64], [128]]], "is neither a value"),  # lists of scalars only
    ([WIDE, []], "is neither a value"),
    ([[1, 23], [1, 23]], "choices repeat a value"),
])
def test_a_bad_list_choice_is_refused_by_the_dry_run_naming_the_field(tmp_path, capsys, choices, words):
    path = written(tmp_path, params={"hidden": {"type": "categorical", "choices": choices}})
    with pytest.raises(SpaceError, match="params.hidden"):
        load_space(path)
    code = main(["sweep", str(path), "--dry-run", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err
    assert code == 2 and "space.yaml: params.hidden" in err and words in err, err
    assert not (tmp_path / "m.db").exists()


def test_warm_start_reads_a_label_back_as_the_choice(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("widths")
    parent = client.create_run(experiment, tags={"gansweep.role": "sweep"}).info.run_id
    run = client.create_run(experiment, tags={"mlflow.parentRunId": parent})
    client.log_param(run.info.run_id, "hidden", "64-128-256-256")  # as the tracking callback logs it
    client.log_param(run.info.run_id, "lr", "0.0002")
    client.log_metric(run.info.run_id, "fid", 12.0)
    client.set_terminated(run.info.run_id, "FINISHED")
    history = warm_start.load(client, experiment, load_space(written(tmp_path)))
    assert [(t.params, t.value) for t in history.trials] == [({"hidden": "64-128-256-256", "lr": 2e-4}, 12.0)]


@pytest.mark.sweep
@pytest.mark.slow
def test_a_sweep_over_list_choices_trains_each_and_logs_its_label(tmp_path, tiny_mlp, ray_address):
    path = written(tmp_path, num_samples=2, max_concurrent=1, resources={"cpu": 1},
                   sampler={"type": "grid", "seed": 0}, scheduler={"type": "fifo"}, stop_when=False,
                   fixed={**{k: v for k, v in tiny_mlp.items() if k != "hidden"}, "epochs": 1},
                   params={"hidden": {"type": "categorical", "choices": [[16, 32], [16, 32, 32]]}})
    assert main(["sweep", str(path), "--address", ray_address, "--storage", str(tmp_path / "sweeps"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("widths").experiment_id])
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["hidden"] for r in kids) == ["16-32", "16-32-32"]
    assert all(r.info.status == "FINISHED" and "hidden=" in r.info.run_name for r in kids)
    for kid in kids:
        saved = client.download_artifacts(kid.info.run_id, "config.yaml", str(tmp_path / kid.info.run_id))
        assert yaml.safe_load(Path(saved).read_text())["hidden"] in ([16, 32], [16, 32, 32]), "a list"
