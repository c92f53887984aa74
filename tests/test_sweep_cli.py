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
    from orchestrator.tracking.summary import pareto_front

    points = {"a": [10.0, 2.0], "b": [12.0, 3.0], "c": [11.0, 1.0], "d": [9.0, 1.5]}
    # fid min, inception_score max: c is worse than a on both; a, b, d trade off
    assert sorted(pareto_front(points, ["min", "max"])) == ["a", "b", "d"]


@pytest.mark.parametrize("setting, field, message", [
    ("epohcs=3", "--set epohcs", "Did you mean epochs?"),
    ("lr=-1", "--set lr", "lr=-1 must be a number greater than 0"),
    ("resources.gpu=-1", "--set resources.gpu", "greater than or equal to 0"),
    ("scheduler.max_tt=3", "--set scheduler.max_tt", "Did you mean max_t?"),
    ("epochs", "--set 'epochs'", "expected KEY=VALUE"),
])
def test_bad_set_names_the_override(tmp_path, capsys, no_ray, setting, field, message):
    assert run(tmp_path, good(), "--set", setting) == 2
    err = capsys.readouterr().err
    assert field in err and message in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sweeps").exists()


def test_set_changes_fixed_values_fields_and_pins_params(tmp_path, capsys, no_ray):
    assert run(tmp_path, good(), "--dry-run", "--set", "epochs=3", "--set", "loss=hinge",
               "--set", "scheduler.max_t=3", "--set", "num_samples=2") == 0
    out = capsys.readouterr().out
    assert "epochs=3" in out and "loss=hinge" in out, "fixed values"
    assert "scheduler  asha (max_t 3," in out and "First 2 of 2 trials" in out
    assert "  loss " not in out.split("params")[-1].split("First")[0], "loss is no longer searched"


@pytest.mark.parametrize("source, field, message", [
    ("{champoin: quickstart-generator}", "--set source", "unknown field 'champoin'"),
    ("{champion: quickstart-generator, part: head}", "--set source", "part must be one of"),
    ("models:/quickstart-generator", "--set source", "models:/<name>@<alias> or models:/<name>/<version>"),
    ("runs:/abc/discriminator", "--set source", "the tracking store sqlite:///"),
])
def test_a_transfer_source_in_a_wrong_form_or_store(tmp_path, capsys, no_ray, source, field, message):
    from orchestrator.cli import QUICKSTART

    transfer = QUICKSTART.parent / "transfer_freeze_mnist.yaml"
    assert main(["sweep", str(transfer), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                 "--storage", str(tmp_path / "sweeps"), "--set", "resources.gpu=0",
                 "--set", f"source={source}"]) == 2
    err = capsys.readouterr().err
    assert f"{field}: {source}: " in err and message in err
    assert not (tmp_path / "mlflow.db").exists(), "looking up a source creates no store"


def test_a_model_source_cannot_be_searched(tmp_path, capsys, no_ray):
    space = {"name": "t", "trainer": "transfer", "metric": "val_acc", "mode": "max",
             "params": {"source": {"type": "categorical", "choices": ["runs:/a/discriminator"]}}}
    assert run(tmp_path, space) == 2
    err = capsys.readouterr().err
    assert "params.source: 'source' names a trained model and cannot be searched over" in err


def test_resume_keeps_the_values_it_started_with(tmp_path, capsys, no_ray):
    assert run(tmp_path, good(), "--resume", "--set", "epochs=3") == 2
    assert "--set cannot change a sweep that is resumed" in capsys.readouterr().err
