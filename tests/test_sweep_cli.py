"""`sweep` on bad input: exit 2, the file and field named, Ray never started, nothing in MLflow."""

from __future__ import annotations

import pytest
import ray
import yaml

from orchestrator.cli import QUICKSTART, main, parse_duration


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray must not start for bad input")

    monkeypatch.setattr(ray, "init", refuse)


def run(tmp_path, space: dict, *extra: str) -> int:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return main(["sweep", str(path), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                 "--storage", str(tmp_path / "sweeps"), *extra])


def good() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


@pytest.mark.parametrize("change, field", [
    (lambda s: s["params"]["lr"].update(type="double"), "params.lr.type"),
    (lambda s: s["params"]["lr"].update(low=1e-2, high=1e-3), "params.lr.low"),
    (lambda s: s["params"]["loss"].update(choices=[]), "params.loss.choices"),
    (lambda s: s.update(trainer="vae"), "trainer"),
    (lambda s: s.update(sampler={"type": "bayes"}), "sampler.type"),
    (lambda s: s.update(scheduler={"type": "hyperband"}), "scheduler.type"),
    (lambda s: s.update(metric="accuracy"), "metric"),
    (lambda s: s["params"]["beta1"].update(when={"optimiser": "adam"}), "params.beta1.when"),
    (lambda s: s.update(resources={"cpu": 1, "gpu": 1.5}), "resources.gpu"),
])
def test_bad_space(tmp_path, capsys, no_ray, change, field):
    space = good()
    change(space)
    assert run(tmp_path, space) == 2
    err = capsys.readouterr().err
    assert "space.yaml" in err and field in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sweeps").exists()


def test_resources_no_node_has(tmp_path, capsys, no_ray):
    space = good()
    space["resources"] = {"cpu": 1, "gpu": 1}  # this machine (and CI) has no GPU
    assert run(tmp_path, space) == 2
    err = capsys.readouterr().err
    assert "resources.gpu" in err and "gpu: 0" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_bad_time_budget(tmp_path, capsys, no_ray):
    assert run(tmp_path, good(), "--time-budget", "soon") == 2
    assert "--time-budget 'soon'" in capsys.readouterr().err


def test_durations():
    assert parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90
    assert parse_duration(None) is None


def test_dry_run_lists_trials_and_starts_nothing(tmp_path, capsys, no_ray):
    assert run(tmp_path, good(), "--dry-run", "--num-samples", "3") == 0
    out = capsys.readouterr().out
    assert "First 3 of 3 trials (each 1 CPU, 0 GPU)" in out
    assert out.count("\n  t00") == 3 and "Dry run: nothing started." in out
    assert not (tmp_path / "mlflow.db").exists()


def test_resume_without_a_sweep(tmp_path, capsys, no_ray):
    assert run(tmp_path, good(), "--resume") == 2
    assert "has no sweep to resume" in capsys.readouterr().err
    from mlflow.tracking import MlflowClient

    assert MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_experiment_by_name("quickstart") is None


def test_pareto_front():
    from orchestrator.summary import pareto_front

    points = {"a": [10.0, 2.0], "b": [12.0, 3.0], "c": [11.0, 1.0], "d": [9.0, 1.5]}
    # fid min, inception_score max: c is worse than a on both; a, b, d trade off
    assert sorted(pareto_front(points, ["min", "max"])) == ["a", "b", "d"]
